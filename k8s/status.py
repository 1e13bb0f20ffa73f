"""Status interpretation: pure functions from a Job and its pods (as the API returns them) to typed reports that
say, in one line each, why a worker is not running. No client, no I/O: tests feed them objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

from jobs import exit_codes
from k8s.kueue import QueueReport, queue_name
from k8s.manifests import GPU_RESOURCE, TRAINER_CONTAINER

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
TERMINAL = ("Succeeded", "Failed")


@dataclass
class PodReport:
    name: str
    index: Optional[int]
    phase: str
    node: str
    restarts: int
    state: str  # one word: Pending, Unschedulable, ImagePullBackOff, Running, OOMKilled, Failed, Succeeded, ...
    detail: str = ""  # the message users need: the scheduler's words, the pull error, the exit code's meaning
    exit_code: Optional[int] = None
    created: str = ""


@dataclass
class JobReport:
    name: str
    namespace: str
    state: str  # Pending, Queued (Kueue has not admitted it), Running, Succeeded, Failed, Suspended
    workers: int
    active: int
    succeeded: int
    failed: int
    conditions: list[dict] = field(default_factory=list)
    pods: list[PodReport] = field(default_factory=list)
    labels: dict = field(default_factory=dict)
    created: str = ""
    message: str = ""
    queue: Optional[QueueReport] = None  # for a job submitted to a Kueue LocalQueue (resources.queue)
    kind: str = "Job"  # or JobSet (distribution.backend: jobset)

    def to_dict(self) -> dict:
        return asdict(self)



def condition_summaries(status: Mapping) -> list[dict]:
    """A Job's or JobSet's status conditions, with only the fields a report shows (and only those set)."""
    return [{k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime") if c.get(k) is not None}
            for c in status.get("conditions") or []]

def job_state(job: Mapping) -> tuple[str, str]:
    """(state, message) from the Job's conditions; Complete/Failed are final."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    # FailureTarget (1.31+) is set before the pods are terminated, Failed after.
    for kind, state in (("Complete", "Succeeded"), ("Failed", "Failed"), ("Suspended", "Suspended"),
                        ("FailureTarget", "Failed")):
        if kind in conditions:
            c = conditions[kind]
            return state, ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
    if "SuccessCriteriaMet" in conditions:
        return "Succeeded", ""
    if (status.get("active") or 0) > 0:
        return "Running", ""
    return "Pending", ""


def job_workers(job: Mapping) -> int:
    """How many workers (indexed pods) a jobctl Job runs: its completions."""
    return int((job.get("spec") or {}).get("completions") or 1)


def pod_index(pod: Mapping) -> Optional[int]:
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(INDEX_ANNOTATION) or (meta.get("labels") or {}).get(INDEX_ANNOTATION)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _limits(pod: Mapping) -> dict:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == TRAINER_CONTAINER:
            return (c.get("resources") or {}).get("limits") or {}
    return {}


def _scheduling_hint(message: str, pod: Mapping) -> str:
    limits = _limits(pod)
    hints = []
    if "Insufficient " + GPU_RESOURCE in message:
        hints.append(
            f"no node has {limits.get(GPU_RESOURCE, '?')} free GPUs: lower resources.gpus, wait for GPUs to free up, "
            "or add GPU nodes"
        )
    if "Insufficient memory" in message or "Insufficient cpu" in message:
        hints.append(f"no node has cpu={limits.get('cpu', '?')} memory={limits.get('memory', '?')} free")
    if "node affinity/selector" in message or "didn't match Pod's node affinity" in message:
        hints.append("no node carries the labels of resources.node_selector")
    if "untolerated taint" in message or "had taint" in message:
        hints.append("the fitting nodes are tainted: add resources.tolerations")
    if "unbound immediate PersistentVolumeClaims" in message or "persistentvolumeclaim" in message.lower():
        hints.append("the artifacts PersistentVolumeClaim is missing or unbound: `kubectl apply -k k8s/base`")
    return ("; ".join(hints) + ". ") if hints else ""


def explain_pod(pod: Mapping) -> PodReport:
    """Turn a pod's status into the one reason a user is hunting for. Pure."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or []
    trainer = next((s for s in statuses if s.get("name") == TRAINER_CONTAINER), statuses[0] if statuses else {})
    report = PodReport(
        name=meta.get("name", "?"),
        index=pod_index(pod),
        phase=phase,
        node=spec.get("nodeName") or "-",
        restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
        state=phase,
        created=meta.get("creationTimestamp") or "",
    )
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    state = trainer.get("state") or {}
    last = (trainer.get("lastState") or {}).get("terminated")
    terminated = state.get("terminated") or last
    waiting = state.get("waiting")

    if meta.get("deletionTimestamp"):
        report.state, report.detail = "Terminating", "the pod is being deleted"
    if status.get("reason") == "Evicted" or conditions.get("DisruptionTarget", {}).get("status") == "True":
        c = conditions.get("DisruptionTarget", {})
        report.state = status.get("reason") or c.get("reason") or "Disrupted"
        report.detail = (status.get("message") or c.get("message") or "") + " (not counted against backoffLimit)"
        return report
    sched = conditions.get("PodScheduled")
    if phase == "Pending" and sched and sched.get("status") == "False":
        message = sched.get("message") or ""
        report.state = sched.get("reason") or "Unschedulable"
        report.detail = _scheduling_hint(message, pod) + f"Scheduler: {message}".strip()
        return report
    if waiting:
        reason = waiting.get("reason") or "Waiting"
        report.state = reason
        message = waiting.get("message") or ""
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"):
            image = trainer.get("image") or next((c.get("image") for c in spec.get("containers") or []), "?")
            report.detail = (
                f"image {image} cannot be pulled: check resources.image (or --image), that it was pushed "
                f"(`make image`), and the registry credentials. {message}"
            ).strip()
        elif reason == "ContainerCreating":
            report.detail = message or "pulling the image and mounting volumes"
        else:
            report.detail = message
        return report
    if terminated:
        code = terminated.get("exitCode")
        report.exit_code = code
        reason = terminated.get("reason") or ""
        if reason == "OOMKilled":
            limit = _limits(pod).get("memory", "?")
            report.state = "OOMKilled"
            report.detail = (
                f"the trainer used more than its memory limit ({limit}); raise resources.memory or lower "
                "training.batch_size (/dev/shm counts against it too)"
            )
        elif code == 0:
            report.state = "Succeeded" if phase == "Succeeded" else "Completed"
        else:
            report.state = "Failed" if phase == "Failed" else (reason or "Error")
            meaning = exit_codes.DESCRIPTIONS.get(code) if code is not None else None
            report.detail = f"exit code {code}" + (f" ({meaning})" if meaning else "") + (f" [{reason}]" if reason and reason != "Error" else "")
            tail = (terminated.get("message") or "").strip()
            if tail:
                report.detail += ": " + " | ".join(tail.splitlines()[-3:])[-400:]
        if last and not state.get("terminated") and state.get("running"):
            report.state = "Running"
            report.detail = "restarted after " + report.detail
        return report
    if state.get("running"):
        report.state = "Running"
    return report


def summarize_job(job: Mapping, pods: list[Mapping] = ()) -> JobReport:
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    state, message = job_state(job)
    if spec.get("suspend") and state in ("Pending", "Running"):
        state = "Suspended"
    if state == "Suspended" and queue_name(job):  # Kueue holds it: not yet admitted, or evicted
        state = "Queued"
    reports = sorted(
        (explain_pod(p) for p in pods),
        key=lambda r: (r.index if r.index is not None else -1, r.created, r.name),
    )
    return JobReport(
        name=meta.get("name", "?"),
        namespace=meta.get("namespace") or "",
        state=state,
        workers=int(spec.get("completions") or spec.get("parallelism") or 1),
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
        conditions=condition_summaries(status),
        pods=reports,
        labels=dict(meta.get("labels") or {}),
        created=meta.get("creationTimestamp") or "",
        message=message,
    )

