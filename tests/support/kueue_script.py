"""What Kueue's controllers write, scripted for one Job in a FakeCluster (tests/support/k8s_cluster.py).

Kueue (v0.19, kueue.x-k8s.io/v1beta1): on a Job labelled kueue.x-k8s.io/queue-name it creates a Workload
(labelled with the Job's uid, owned by the Job), keeps the Job suspended while the Workload is pending, and on
admission records status.admission and un-suspends the Job; on eviction it sets Evicted (and Preempted), clears
the admission and suspends the Job again (the Job controller then deletes its pods); when the Job finishes, the
Workload gets Finished. The objects are checked against Kueue's vendored Workload CRD (tests/crds/).
"""

from __future__ import annotations

import copy
import datetime
import itertools
from typing import Optional

_clock = itertools.count(1)


def _stamp() -> str:
    """Strictly increasing condition times (the real ones have second resolution; tests run faster)."""
    base = datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=datetime.timezone.utc)
    return (base + datetime.timedelta(seconds=next(_clock))).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: bool, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": _stamp(), "observedGeneration": 1}


class KueueScript:
    def __init__(self, cluster, job_name: str, *, cluster_queue: str = "team-gpus",
                 flavors: Optional[dict] = None):
        self.cluster = cluster
        self.job_name = job_name
        self.cluster_queue = cluster_queue
        self.flavors = flavors or {"nvidia.com/gpu": "h100", "cpu": "default-flavor", "memory": "default-flavor"}
        self.workload_name = ""
        self.pod_rounds = 0

    # ---- reading back
    def _get(self, kind: str, name: str) -> dict:
        found = [o for o in self.cluster.objects(kind) if o["metadata"]["name"] == name]
        assert found, f"no {kind} {name}"
        return found[0]

    def job(self) -> dict:
        return self._get("Job", self.job_name)

    def workload(self) -> dict:
        return self._get("Workload", self.workload_name)

    def _set_conditions(self, obj: dict, *conditions: dict) -> None:
        current = {c["type"]: c for c in (obj.setdefault("status", {}).get("conditions") or [])}
        for c in conditions:
            current[c["type"]] = c
        obj["status"]["conditions"] = list(current.values())

    # ---- what Kueue does
    def create_workload(self, *, reason: str = "Pending",
                        message: str = "couldn't assign flavors to pod set main: insufficient unused quota for "
                                       "nvidia.com/gpu in flavor h100, 4 more needed") -> dict:
        job = self.job()
        meta = job["metadata"]
        self.workload_name = f"job-{self.job_name}-{meta['uid'][:5]}"
        template = copy.deepcopy(job["spec"]["template"])
        workload = {
            "apiVersion": "kueue.x-k8s.io/v1beta1",
            "kind": "Workload",
            "metadata": {
                "name": self.workload_name,
                "namespace": meta["namespace"],
                "labels": {"kueue.x-k8s.io/job-uid": meta["uid"]},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": self.job_name,
                                     "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": {
                "queueName": meta["labels"]["kueue.x-k8s.io/queue-name"],
                "podSets": [{"name": "main", "count": job["spec"].get("parallelism", 1), "template": template}],
                "active": True,
            },
            "status": {"conditions": [_condition("QuotaReserved", False, reason, message)]},
        }
        self.cluster.put("Workload", workload)
        return workload

    def admit(self) -> None:
        workload = self.workload()
        count = workload["spec"]["podSets"][0]["count"]
        workload["status"]["admission"] = {
            "clusterQueue": self.cluster_queue,
            "podSetAssignments": [{"name": "main", "flavors": dict(self.flavors), "count": count}],
        }
        self._set_conditions(
            workload,
            _condition("QuotaReserved", True, "QuotaReserved", f"Quota reserved in ClusterQueue {self.cluster_queue}"),
            _condition("Admitted", True, "Admitted", "The workload is admitted"),
        )
        self.cluster.put("Workload", workload)
        job = self.job()
        job["spec"]["suspend"] = False  # Kueue's job reconciler resumes the Job
        self._set_conditions(job, _condition("Suspended", False, "JobResumed", "Job resumed"))
        job["status"]["active"] = count
        self.cluster.put("Job", job)

    def start_pods(self, make_pod) -> list[dict]:
        """The Job controller's pods for this admission (new names each round)."""
        self.pod_rounds += 1
        job = self.job()
        pods = [make_pod(job, i, suffix=f"r{self.pod_rounds}x{i}", phase="Running", state={"running": {}})
                for i in range(job["spec"].get("parallelism", 1))]
        for pod in pods:
            self.cluster.put("Pod", pod)
        return pods

    def evict(self, *, reason: str = "Preempted", preempted_by: str = "InClusterQueue") -> None:
        """Kueue evicts: Evicted (+ Preempted), admission cleared, the Job suspended and its pods deleted by the
        Job controller (after SIGTERM: the trainer saves its backup and exits 75)."""
        workload = self.workload()
        workload["status"].pop("admission", None)
        conditions = [
            _condition("Evicted", True, reason, "Preempted to accommodate a workload (UID: 6e1ba0b5) due to "
                                                "prioritization in the ClusterQueue"),
            _condition("QuotaReserved", False, "Pending", "Preempted to accommodate a higher priority workload"),
            _condition("Admitted", False, "NoReservation", "The workload has no reservation"),
        ]
        if reason == "Preempted":
            conditions.append(_condition("Preempted", True, preempted_by,
                                         "Preempted to accommodate a workload (UID: 6e1ba0b5) due to prioritization "
                                         "in the ClusterQueue"))
        self._set_conditions(workload, *conditions)
        self.cluster.put("Workload", workload)
        job = self.job()
        job["spec"]["suspend"] = True
        self._set_conditions(job, _condition("Suspended", True, "JobSuspended", "Job suspended"))
        job["status"]["active"] = 0
        self.cluster.put("Job", job)
        for pod in self.cluster.objects("Pod"):
            if pod["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]:
                self.cluster.delete_stored("Pod", pod["metadata"]["name"])

    def readmit(self) -> None:
        """Back in the queue, then admitted again (Kueue keeps the old Evicted condition; Admitted is newer)."""
        workload = self.workload()
        self._set_conditions(workload, _condition("Requeued", True, "Preempted", "Requeued after eviction"))
        self.cluster.put("Workload", workload)
        self.admit()

    def finish(self) -> None:
        job = self.job()
        self._set_conditions(job, _condition("Complete", True, "CompletionsReached", "Reached expected number of succeeded pods"))
        job["status"].update(active=0, succeeded=job["spec"].get("completions", 1))
        self.cluster.put("Job", job)
        workload = self.workload()
        self._set_conditions(workload, _condition("Finished", True, "Succeeded", "Job finished successfully"))
        self.cluster.put("Workload", workload)
