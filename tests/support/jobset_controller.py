"""What the JobSet controller (kubernetes-sigs/jobset v0.12.0, pkg/controllers/jobset_controller.go) and the Job
controller write, for scripting a FakeCluster: a JobSet's child Jobs, their pods, and the JobSet's status.

KMock stores objects and runs no controller; a test calls these to move the world on one step at a time.
Names, labels and annotations follow the controllers: child Job `<jobset>-<replicatedJob>-<jobIndex>` labelled and
annotated with jobset.sigs.k8s.io/{jobset-name, jobset-uid, replicatedjob-name, job-index, restart-attempt}
and owned by the JobSet; its pods `<job>-<podIndex>-<suffix>` with the Job's template labels, the completion
index, hostname `<job>-<podIndex>` and the JobSet's subdomain.
"""

from __future__ import annotations

import copy
import re
from typing import Optional

from k8s import jobset
from k8s.status import INDEX_ANNOTATION
from tests.support.k8s_cluster import FakeCluster, make_pod

RESTART_ATTEMPT = jobset.LABEL_RESTART_ATTEMPT


def stored_jobset(cluster: FakeCluster, name: str) -> dict:
    (found,) = [o for o in cluster.objects(jobset.KIND) if o["metadata"]["name"] == name]
    return found


def create_children(cluster: FakeCluster, name: str, *, restart: int = 0, phase: str = "Running",
                    state: Optional[dict] = None, created: Optional[str] = None) -> tuple[dict, list[dict]]:
    """The child Job and its pods, as the controllers create them for attempt `restart`; returns (job, pods)."""
    js = stored_jobset(cluster, name)
    (rjob,) = js["spec"]["replicatedJobs"]
    job_name = f"{name}-{rjob['name']}-0"
    marks = {
        jobset.LABEL_JOBSET_NAME: name,
        jobset.LABEL_JOBSET_UID: js["metadata"]["uid"],
        jobset.LABEL_REPLICATED_JOB: rjob["name"],
        jobset.LABEL_JOB_INDEX: "0",
        RESTART_ATTEMPT: str(restart),
    }
    spec = copy.deepcopy(rjob["template"]["spec"])
    uid = f"job-uid-{name}-{restart}"
    pod_labels = dict(spec["template"]["metadata"].get("labels") or {}, **marks,
                      **{"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": job_name})
    spec["template"]["metadata"] = {"labels": pod_labels, "annotations": dict(marks)}
    spec["template"]["spec"]["subdomain"] = js["spec"]["network"]["subdomain"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    spec["suspend"] = False
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name, "namespace": cluster.namespace, "uid": uid,
            "labels": dict(rjob["template"]["metadata"].get("labels") or {}, **marks),
            "annotations": dict(marks),
            "ownerReferences": [{"apiVersion": jobset.API_VERSION, "kind": jobset.KIND, "name": name,
                                 "uid": js["metadata"]["uid"], "controller": True}],
        },
        "spec": spec,
        "status": {"active": spec["parallelism"]},
    }
    cluster.put("Job", job)
    pods = []
    for index in range(spec["completions"]):
        pod = make_pod(job, index, suffix=f"r{restart}x{index}", phase=phase,
                       state=state if state is not None else ({"running": {}} if phase == "Running" else None),
                       created=created)
        pod["metadata"]["annotations"] = dict(marks, **{INDEX_ANNOTATION: str(index)})
        pod["spec"]["hostname"] = f"{job_name}-{index}"
        cluster.put("Pod", pod)
        pods.append(pod)
    return job, pods


def delete_children(cluster: FakeCluster, job: dict, pods: list[dict]) -> None:
    """What a restart (BlockingRecreate) does first: the old child Job and all its pods go."""
    def remove():
        for (res, _, name), obj in cluster.emulator.objects.items():
            if not obj.deleted and name in {job["metadata"]["name"], *(p["metadata"]["name"] for p in pods)}:
                obj.delete()

    cluster._call(remove)


def set_status(cluster: FakeCluster, name: str, **status) -> None:
    """Replace the JobSet's status (the controller owns it)."""
    js = stored_jobset(cluster, name)
    js["status"] = status
    cluster.put(jobset.KIND, js)


def condition(kind: str, reason: str, message: str) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-02T12:00:00Z"}


# The JobSet admission webhook's checks that a schema cannot express (jobset v0.12.0 pkg/webhooks/jobset_webhook.go).
_RULE_NAME = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_VALID_FAILURE_REASONS = {"BackoffLimitExceeded", "DeadlineExceeded", "FailedIndexes", "MaxFailedIndexesExceeded",
                          "PodFailurePolicy"}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def webhook_problems(js: dict) -> list[str]:
    """What JobSet's validating webhook would refuse on create, for the fields jobctl sets."""
    found = []
    name = js["metadata"]["name"]
    rules = (js["spec"].get("failurePolicy") or {}).get("rules") or []
    names = [r.get("name", "") for r in rules]
    for rule in rules:
        if not 1 <= len(rule.get("name", "")) <= 128 or not _RULE_NAME.fullmatch(rule.get("name", "")):
            found.append(f"invalid failure policy rule name {rule.get('name')!r}")
        for reason in rule.get("onJobFailureReasons") or []:
            if reason not in _VALID_FAILURE_REASONS:
                found.append(f"invalid onJobFailureReasons {reason!r}")
    if len(set(names)) != len(names):
        found.append(f"rule names are not unique: {names}")
    for rjob in js["spec"]["replicatedJobs"]:
        if not _DNS1035.fullmatch(rjob["name"]):
            found.append(f"replicatedJob name {rjob['name']!r} is not a DNS-1035 label")
        job_name = f"{name}-{rjob['name']}-{rjob.get('replicas', 1) - 1}"
        if len(job_name) > 63 or not _DNS1035.fullmatch(job_name):
            found.append(f"job name {job_name!r} is not a DNS-1035 label of at most 63 characters")
        spec = rjob["template"]["spec"]
        if spec.get("completionMode") == "Indexed" and spec.get("completions"):
            pod = f"{job_name}-{spec['completions'] - 1}-abcde"
            if len(pod) > 63 or not _DNS1035.fullmatch(pod):
                found.append(f"pod name {pod!r} is not a DNS-1035 label of at most 63 characters")
    subdomain = (js["spec"].get("network") or {}).get("subdomain")
    if subdomain is not None and (len(subdomain) > 63 or not _DNS1035.fullmatch(subdomain)):
        found.append(f"network.subdomain {subdomain!r} is not a DNS-1035 label")
    return found
