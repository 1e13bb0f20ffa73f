"""A JobSet's state for `jobctl status / list / logs / submit --wait`, from the JobSet, its child Jobs and pods. Pure.

JobSet (v0.12.0) reports: conditions Completed / Failed / Suspended / RestartingJobSet (metav1.Condition),
`status.restarts` (whole-group restarts so far), `status.terminalState` and per replicated job the number of child
Jobs ready, active, succeeded, failed. A pod's worker index is its child Job's index (annotation
jobset.sigs.k8s.io/job-index) times the pods per Job, plus its completion index.
"""

from __future__ import annotations

from typing import Mapping, Optional

from k8s import jobset
from k8s.client import INDEX_ANNOTATION, JobReport, explain_pod


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
        conditions=[
            {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime") if c.get(k) is not None}
            for c in status.get("conditions") or []
        ],
        pods=reports,
        labels=dict(meta.get("labels") or {}),
        created=meta.get("creationTimestamp") or "",
        message=message,
        **counts,
    )
