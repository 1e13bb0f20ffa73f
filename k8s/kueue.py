"""Kueue, read-only: where a queued Job stands. Pure functions from the Workload Kueue creates for a Job (and the
visibility API's answer) to a `QueueReport`; the requests are JobClient's (k8s/client.py).

Kueue (kueue.x-k8s.io) keeps a Job labelled `kueue.x-k8s.io/queue-name` suspended until it admits the Job's
Workload into a ClusterQueue, un-suspends it, and suspends it again when it evicts the Workload (preemption, a
`waitForPodsReady` timeout, a stopped queue). The Workload's conditions say which, with Kueue's reason:
    QuotaReserved  False/Pending or Inadmissible: waiting, with the reason (e.g. insufficient quota)
    Admitted       True: running in status.admission.clusterQueue, flavours per resource
    Evicted        True: reason Preempted, PodsReadyTimeout, AdmissionCheck, ClusterQueueStopped, ...
    Preempted      True: InClusterQueue, InCohortReclamation, ... (who took the quota)
    Finished       True: done
Positions come from the on-demand visibility API (visibility.kueue.x-k8s.io/v1beta1, Kueue >= 0.9):
GET .../namespaces/<ns>/localqueues/<queue>/pendingworkloads lists the pending Workloads with
positionInLocalQueue (from 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue labels each Workload with its Job's uid

PENDING, ADMITTED, EVICTED, PREEMPTED, FINISHED = "pending", "admitted", "evicted", "preempted", "finished"


@dataclass
class QueueReport:
    queue: str
    state: str  # pending | admitted | evicted | preempted | finished; "unknown" when no Workload is found
    reason: str = ""
    message: str = ""
    workload: str = ""
    cluster_queue: str = ""
    flavors: dict = field(default_factory=dict)  # resource -> flavour
    position: Optional[int] = None  # 1-based position in the LocalQueue, when the visibility API answered
    position_note: str = ""  # why there is no position (one line), when there is none and the job is pending

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for `status` and `submit --wait`."""
        text = f"queue {self.queue}: {self.state}"
        if self.state == ADMITTED and self.cluster_queue:
            text += f" into ClusterQueue {self.cluster_queue}"
            if self.flavors:
                text += " (" + ", ".join(f"{r} on flavour {f}" for r, f in sorted(self.flavors.items())) + ")"
        if self.position is not None:
            text += f", {_ordinal(self.position)} in line"
        if self.reason or self.message:
            text += ": " + " - ".join(x for x in (self.reason, self.message) if x)
        if self.position is None and self.position_note:
            text += f" ({self.position_note})"
        return text


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def queue_name(job: Mapping) -> Optional[str]:
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)


def _true(conditions: Mapping[str, dict], kind: str) -> Optional[dict]:
    c = conditions.get(kind)
    return c if c and c.get("status") == "True" else None


def workload_of(job: Mapping, workloads: list[Mapping]) -> Optional[Mapping]:
    """The Workload Kueue made for `job`: labelled with its uid, or owned by it; the newest if several."""
    uid = (job.get("metadata") or {}).get("uid")
    mine = [
        w for w in workloads
        if uid and (((w.get("metadata") or {}).get("labels") or {}).get(JOB_UID_LABEL) == uid
                    or any(o.get("uid") == uid for o in (w.get("metadata") or {}).get("ownerReferences") or []))
    ]
    return max(mine, key=lambda w: (w.get("metadata") or {}).get("creationTimestamp") or "", default=None)


def interpret_workload(queue: str, workload: Optional[Mapping]) -> QueueReport:
    """The Workload's state and reason. Pure."""
    if workload is None:
        return QueueReport(queue, PENDING, reason="NoWorkload",
                           message="Kueue has not created a Workload for the job yet (is Kueue running, and does "
                                   f"LocalQueue {queue!r} exist in this namespace?)")
    status = workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    report = QueueReport(queue, PENDING, workload=(workload.get("metadata") or {}).get("name", ""))
    admission = status.get("admission") or {}
    if admission:
        report.cluster_queue = admission.get("clusterQueue") or ""
        for assignment in admission.get("podSetAssignments") or []:
            report.flavors.update(assignment.get("flavors") or {})

    def take(c: dict, state: str) -> QueueReport:
        report.state, report.reason, report.message = state, c.get("reason") or "", c.get("message") or ""
        return report

    if c := _true(conditions, "Finished"):
        return take(c, FINISHED)
    evicted = _true(conditions, "Evicted")
    admitted = _true(conditions, "Admitted")
    # A re-admitted Workload keeps its old Evicted condition: the later transition wins.
    if evicted and (not admitted or (evicted.get("lastTransitionTime") or "") >= (admitted.get("lastTransitionTime") or "")):
        # Preempted says by whom (InClusterQueue, InCohortReclamation...); Evicted says why it stopped.
        preempted = _true(conditions, "Preempted")
        if preempted or evicted.get("reason") == "Preempted":
            return take(preempted or evicted, PREEMPTED)
        return take(evicted, EVICTED)
    if admitted:
        return take(admitted, ADMITTED)
    reserved = conditions.get("QuotaReserved")
    if reserved and reserved.get("status") == "False":
        return take(reserved, PENDING)  # Pending / Inadmissible, with Kueue's reason ("insufficient quota...")
    if (requeued := conditions.get("Requeued")) and requeued.get("status") == "False":
        return take(requeued, PENDING)
    report.reason = "Waiting"
    return report


def position_in(summary: Mapping, workload_name: str) -> Optional[int]:
    """1-based position of `workload_name` in a PendingWorkloadsSummary, None when it is not listed."""
    for item in summary.get("items") or []:
        if (item.get("metadata") or {}).get("name") == workload_name:
            raw = item.get("positionInLocalQueue")
            return int(raw) + 1 if raw is not None else None
    return None
