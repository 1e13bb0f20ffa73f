"""The JobSet backend (`distribution.backend: jobset`): the workers as one JobSet (jobset.x-k8s.io/v1alpha2).

`build_jobset_objects(spec, ...)` returns, in creation order:
    ConfigMap  <name>-spec     as for the Indexed Job (k8s/manifests.py)
    JobSet     <name>          one replicated job "worker" of one Indexed Job with N pods

What JobSet adds over the Indexed Job (k8s/manifests.py), and why it is worth its controller:
- one failure restarts the whole group: the child Job has backoffLimit 0, so a worker that fails fails its Job,
  and the JobSet recreates every Job (`failurePolicy.maxRestarts` = resources.backoff_limit). `BlockingRecreate`
  waits until every old pod is gone before the new ones start: never two pods of one worker index;
- its own headless Service (`network.enableDNSHostnames`, `publishNotReadyAddresses`): pods resolve as
  `<name>-worker-0-<i>.<name>`, and jobctl creates no Service;
- the failure reasons decide: a pod failure policy `FailJob` (bad spec, missing data: exit 2, 3) or a deadline
  fails the JobSet at once instead of restarting it.

The pod template, security context, labels, volumes and env are the Indexed Job's, built by
`k8s.manifests.build_job_objects` and adapted, never copied; the container learns its place from JobSet's pod
annotations through the downward API (jobs/tf_config.py builds TF_CONFIG from them). Pure: no client, no TensorFlow.
"""

from __future__ import annotations

import copy
from typing import Mapping, Optional

from jobs import tf_config
from jobs.spec import JobSpec
from k8s import kueue, manifests
from k8s.common import ManifestError

API_VERSION = "jobset.x-k8s.io/v1alpha2"
KIND = "JobSet"
GROUP, _, VERSION = API_VERSION.partition("/")
PLURAL = "jobsets"
REPLICATED_JOB = "worker"
# JobSet's pod labels and annotations (kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go).
LABEL_JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
LABEL_JOBSET_UID = "jobset.sigs.k8s.io/jobset-uid"
LABEL_REPLICATED_JOB = "jobset.sigs.k8s.io/replicatedjob-name"
LABEL_JOB_INDEX = "jobset.sigs.k8s.io/job-index"
LABEL_RESTART_ATTEMPT = "jobset.sigs.k8s.io/restart-attempt"
# Job failure reasons (batch/v1) that a restart cannot fix.
FAIL_AT_ONCE_REASONS = ("PodFailurePolicy", "DeadlineExceeded")
# JobSet's webhook checks the longest pod name, "<jobset>-<rjob>-<jobIndex>-<podIndex>" plus a 5-character suffix.
_POD_SUFFIX = len("-abcde")
MAX_NAME = 63


def longest_pod_name(name: str, workers: int) -> str:
    return f"{name}-{REPLICATED_JOB}-0-{workers - 1}" + "x" * _POD_SUFFIX


def check_jobset(spec: JobSpec, name: str) -> list[str]:
    """What JobSet's webhook would refuse that the Indexed Job accepts; empty when fine."""
    problems = []
    if spec.resources.workers < 2:
        problems.append(f"distribution.backend 'jobset' needs resources.workers >= 2, received {spec.resources.workers}")
    longest = longest_pod_name(name, spec.resources.workers)
    if len(longest) > MAX_NAME:
        room = MAX_NAME - (len(longest) - len(name))
        problems.append(
            f"name: JobSet names its pods <name>-{REPLICATED_JOB}-<job>-<worker>-<5 characters>, at most {MAX_NAME} "
            f"characters; with {spec.resources.workers} workers the name can have at most {room} characters, "
            f"received {name!r} ({len(name)})"
        )
    return problems


def _jobset_env(workers: int) -> list[dict]:
    """What the container reads in JobSet mode (jobs/tf_config.py): JobSet's annotations, by the downward API."""
    def annotation(var: str, key: str) -> dict:
        return {"name": var, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{key}']"}}}

    return [
        annotation(tf_config.ENV_JOBSET_NAME, LABEL_JOBSET_NAME),
        annotation(tf_config.ENV_REPLICATED_JOB, LABEL_REPLICATED_JOB),
        annotation(tf_config.ENV_JOB_INDEX, LABEL_JOB_INDEX),
        {"name": tf_config.ENV_PODS_PER_JOB, "value": str(workers)},
    ]


def failure_policy(max_restarts: int) -> dict:
    return {
        "maxRestarts": max_restarts,
        # The whole group goes before the new one starts: MultiWorkerMirroredStrategy cannot take two pods of
        # one worker index ("Duplicate task registration").
        "restartStrategy": "BlockingRecreate",
        "rules": [
            # A wrong spec, missing data (the pod failure policy's FailJob) or the deadline: restarting cannot help.
            {"name": "fail_at_once", "action": "FailJobSet", "onJobFailureReasons": list(FAIL_AT_ONCE_REASONS)},
            # Anything else (a worker crashed, exited 75 or 76): RestartJobSet, JobSet's default, within maxRestarts.
        ],
    }


def build_jobset_objects(
    spec: JobSpec,
    *,
    run_id: Optional[str] = None,
    extra_labels: Optional[Mapping[str, str]] = None,
    name: Optional[str] = None,
    namespace: Optional[str] = None,
    image: Optional[str] = None,
    artifacts_claim: str = manifests.ARTIFACTS_CLAIM,
    service_account: str = manifests.SERVICE_ACCOUNT,
    ttl_seconds_after_finished: int = manifests.DEFAULT_TTL_SECONDS_AFTER_FINISHED,
) -> list[dict]:
    """[ConfigMap, JobSet] for a multi-worker spec; the arguments are `build_job_objects`'s.

    Raises ManifestError listing every problem (the Indexed Job's and JobSet's own) before anything is built.
    """
    job_name = name or spec.name
    own = check_jobset(spec, job_name)
    try:
        objects = manifests.build_job_objects(
            spec, run_id=run_id, extra_labels=extra_labels, name=job_name, namespace=namespace, image=image,
            artifacts_claim=artifacts_claim, service_account=service_account,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
        )
    except ManifestError as exc:
        if not own:
            raise
        raise ManifestError(f"{exc}\nand as a JobSet:" + "".join(f"\n  - {p}" for p in own)) from None
    if own:
        plural = "s" if len(own) != 1 else ""
        raise ManifestError(f"job {job_name!r} cannot run as a JobSet: {len(own)} problem{plural}\n"
                            + "\n".join(f"  - {p}" for p in own))
    job = manifests.find_job(objects)
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    return [configmap, jobset_from_job(job, spec.resources.backoff_limit, ttl_seconds_after_finished)]


def jobset_from_job(job: dict, max_restarts: int, ttl_seconds_after_finished: int) -> dict:
    """The JobSet running `job` (an Indexed Job of k8s.manifests) as its one replicated job."""
    job = copy.deepcopy(job)
    name = job["metadata"]["name"]
    workers = job["spec"]["completions"]
    job_spec = job["spec"]
    # The child Job fails on the first failed pod: JobSet, not the Job controller, retries, and it restarts all.
    job_spec["backoffLimit"] = 0
    # JobSet owns the lifetime: its ttl removes the child Jobs with it; a child's own ttl would race the restarts.
    job_spec.pop("ttlSecondsAfterFinished", None)
    # A Job rendered suspended (e.g. for a queue that admits it) becomes a suspended JobSet: JobSet suspends and
    # resumes its child Jobs itself, and its webhook owns the children's suspend field.
    suspend = job_spec.pop("suspend", None)
    container = job_spec["template"]["spec"]["containers"][0]
    container["env"] = container["env"] + _jobset_env(workers)
    spec: dict = {
        "network": {"enableDNSHostnames": True, "publishNotReadyAddresses": True, "subdomain": name},
        "failurePolicy": failure_policy(max_restarts),
        "successPolicy": {"operator": "All", "targetReplicatedJobs": [REPLICATED_JOB]},
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "replicatedJobs": [{
            "name": REPLICATED_JOB,
            "replicas": 1,
            # Kueue admits the JobSet as one Workload (its queue label); a child Job carrying the label too could be
            # queued on its own.
            "template": {"metadata": {"labels": {k: v for k, v in job["metadata"]["labels"].items()
                                                 if k != kueue.QUEUE_LABEL}},
                         "spec": job_spec},
        }],
    }
    if suspend is not None:
        spec["suspend"] = suspend
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": job["metadata"], "spec": spec}


def build_objects(spec: JobSpec, **kwargs) -> list[dict]:
    """The objects of `spec` on the backend it names (distribution.backend): job or jobset."""
    if spec.distribution.backend == "jobset":
        return build_jobset_objects(spec, **kwargs)
    return manifests.build_job_objects(spec, **kwargs)


def find_workload(objects: list[dict]) -> dict:
    """The Job or JobSet among rendered objects (the one object the others hang off)."""
    found = [o for o in objects if (o.get("apiVersion"), o.get("kind")) in (("batch/v1", "Job"), (API_VERSION, KIND))]
    if len(found) != 1:
        raise ManifestError(f"expected exactly one Job or JobSet among the objects, received {len(found)}")
    return found[0]
