"""The object behind a jobctl job name (distribution.backend), a batch/v1 Job or a JobSet: its state, workers,
pods and summary for `jobctl status / list / logs / cancel / submit --wait`. Pure: the client reads the objects.

JobSet (v0.12.0) reports: conditions Completed / Failed / Suspended / RestartingJobSet (metav1.Condition),
`status.restarts` (whole-group restarts so far), `status.terminalState` and per replicated job the number of child
Jobs ready, active, succeeded, failed. A pod's worker index is its child Job's index (annotation
jobset.sigs.k8s.io/job-index) times the pods per Job, plus its completion index.
"""

from __future__ import annotations

from typing import Mapping, Optional

from k8s import common, jobset
from k8s.kueue import queue_name
from k8s.status import INDEX_ANNOTATION, JobReport, condition_summaries, explain_pod, job_state, job_workers, pod_index, summarize_job

def is_jobset(obj: Mapping) -> bool:
    return obj.get("kind") == jobset.KIND or str(obj.get("apiVersion", "")).startswith(jobset.GROUP + "/")


def state(obj: Mapping) -> tuple[str, str]:
    return jobset_state(obj) if is_jobset(obj) else job_state(obj)


def workers(obj: Mapping) -> int:
    return jobset_workers(obj) if is_jobset(obj) else job_workers(obj)


def summarize(obj: Mapping, pods: list[Mapping] = ()) -> JobReport:
    return summarize_jobset(obj, pods) if is_jobset(obj) else summarize_job(obj, pods)


def worker_of(obj: Mapping, pod: Mapping) -> Optional[int]:
    """The worker index of one of `obj`'s pods (0 is the chief)."""
    return worker_index(pod, _pods_per_job(obj)) if is_jobset(obj) else pod_index(pod)


def pod_selector(obj: Mapping) -> dict[str, str]:
    """Labels that select the workload's pods: the Job's selector, or JobSet's own pod label."""
    name = obj["metadata"]["name"]
    if is_jobset(obj):
        return {jobset.LABEL_JOBSET_NAME: name}
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels")
    return selector or {common.LABEL_JOB: name}  # not yet defaulted by the API server: jobctl's own label


def owns_pod(obj: Mapping, pod: Mapping) -> bool:
    """False for pods of an older Job or JobSet that had the same name."""
    uid = (obj.get("metadata") or {}).get("uid")
    meta = pod.get("metadata") or {}
    if not uid:
        return True
    if is_jobset(obj):  # pods belong to the child Jobs; JobSet labels them with its own uid
        found = (meta.get("labels") or {}).get(jobset.LABEL_JOBSET_UID)
        return found is None or found == uid
    owners = meta.get("ownerReferences")
    return not owners or any(o.get("uid") == uid for o in owners)


def _conditions(js: Mapping) -> dict[str, Mapping]:
    return {c.get("type"): c for c in (js.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def _pods_per_job(js: Mapping) -> int:
    rjobs = (js.get("spec") or {}).get("replicatedJobs") or [{}]
    return int(((rjobs[0].get("template") or {}).get("spec") or {}).get("completions") or 1)


def jobset_workers(js: Mapping) -> int:
    """Every pod of every child Job: sum of replicas x completions over the replicated jobs."""
    total = 0
    for rjob in (js.get("spec") or {}).get("replicatedJobs") or []:
        completions = ((rjob.get("template") or {}).get("spec") or {}).get("completions") or 1
        total += int(rjob.get("replicas") or 1) * int(completions)
    return total or 1


def jobset_state(js: Mapping) -> tuple[str, str]:
    """(state, message) in the words `jobctl status` uses for Jobs: Succeeded, Failed, Suspended, Running, Pending."""
    status = js.get("status") or {}
    conditions = _conditions(js)
    restarts = int(status.get("restarts") or 0)
    max_restarts = ((js.get("spec") or {}).get("failurePolicy") or {}).get("maxRestarts")
    for kind, state in (("Completed", "Succeeded"), ("Failed", "Failed"), ("Suspended", "Suspended")):
        if kind in conditions:
            c = conditions[kind]
            return state, ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
    if status.get("terminalState") in ("Completed", "Failed"):
        return ("Succeeded" if status["terminalState"] == "Completed" else "Failed"), ""
    if (js.get("spec") or {}).get("suspend"):
        return "Suspended", ""
    restart_note = ""
    if restarts:
        restart_note = f"group restart {restarts}" + (f" of at most {max_restarts}" if max_restarts is not None else "")
    if "RestartingJobSet" in conditions:
        c = conditions["RestartingJobSet"]
        return "Restarting", "; ".join(x for x in (restart_note, c.get("message")) if x)
    active = sum(int(r.get("active") or 0) + int(r.get("ready") or 0) > 0
                 for r in status.get("replicatedJobsStatus") or [])
    return ("Running" if active else "Pending"), restart_note


def worker_index(pod: Mapping, pods_per_job: int) -> Optional[int]:
    meta = pod.get("metadata") or {}
    found = {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}
    try:
        return int(found.get(jobset.LABEL_JOB_INDEX, 0)) * pods_per_job + int(found[INDEX_ANNOTATION])
    except (KeyError, ValueError):
        return None


def summarize_jobset(js: Mapping, pods: list[Mapping] = ()) -> JobReport:
    meta = js.get("metadata") or {}
    status = js.get("status") or {}
    state, message = jobset_state(js)
    if state == "Suspended" and queue_name(js):  # Kueue holds it: not yet admitted, or evicted
        state = "Queued"
    per_job = _pods_per_job(js)
    reports = []
    for pod in pods:
        report = explain_pod(pod)
        report.index = worker_index(pod, per_job)
        reports.append(report)
    reports.sort(key=lambda r: (r.index if r.index is not None else -1, r.created, r.name))
    counts = {"active": 0, "succeeded": 0, "failed": 0}
    for r in status.get("replicatedJobsStatus") or []:
        for key in counts:
            counts[key] += int(r.get(key) or 0) * per_job  # child Jobs, each of per_job pods
    if pods:  # counted from the pods when we have them: exact, and what the table below shows
        counts = {
            "active": sum(1 for r in reports if r.phase in ("Pending", "Running")),
            "succeeded": sum(1 for r in reports if r.phase == "Succeeded"),
            "failed": sum(1 for r in reports if r.phase == "Failed"),
        }
    return JobReport(
        name=meta.get("name", "?"),
        namespace=meta.get("namespace") or "",
        state=state,
        workers=jobset_workers(js),
        conditions=condition_summaries(status),
        pods=reports,
        labels=dict(meta.get("labels") or {}),
        created=meta.get("creationTimestamp") or "",
        message=message,
        kind=jobset.KIND,
        **counts,
    )
