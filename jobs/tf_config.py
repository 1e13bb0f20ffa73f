"""TF_CONFIG for a worker of an Indexed Job or of a JobSet, from the environment the manifests set (k8s/manifests.py
and k8s/jobset.py set it).

Pure and TensorFlow-free: `jobs/distribute.py` calls `tf_config_from_env(os.environ)` before it creates the strategy.

Indexed Job (distribution.backend: job):
    JOB_COMPLETION_INDEX   (Kubernetes) this worker's index; 0 is the chief
    JOBCTL_WORKERS         number of workers; absent or 1: not a multi-worker pod, returns None
    JOBCTL_JOB_NAME        the Job's name: the Job controller names each pod's host <job>-<index>
    JOBCTL_SERVICE         the headless Service that gives those hosts DNS names (<host>.<service>)
    JOBCTL_NAMESPACE       optional: makes the names fully qualified (<host>.<service>.<namespace>.svc)
    JOBCTL_PORT            optional, default 2222
JobSet (distribution.backend: jobset): pod hosts are <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>
    JOBSET_NAME            (JobSet's pod annotation jobset.sigs.k8s.io/jobset-name, by the downward API) its presence
                           selects this mode
    JOBSET_REPLICATED_JOB  (annotation jobset.sigs.k8s.io/replicatedjob-name) the replicated job of the workers
    JOBSET_JOB_INDEX       (annotation jobset.sigs.k8s.io/job-index) which child Job of it this pod belongs to
    JOB_COMPLETION_INDEX   (Kubernetes, the child Job is Indexed) the pod's index within its Job
    JOBCTL_PODS_PER_JOB    pods of each child Job (its completions); worker index = job index * this + pod index
    JOBCTL_WORKERS, JOBCTL_SERVICE (the JobSet's subdomain), JOBCTL_NAMESPACE, JOBCTL_PORT as above
An explicit TF_CONFIG in the environment wins (users running their own launcher); it is parsed and checked.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from jobs.errors import BadInputError
from jobs.spec import DNS1123_LABEL  # TensorFlow-free

DEFAULT_PORT = 2222

# The environment contract with the manifests: k8s/ renders these names, this module reads them.
ENV_WORKERS = "JOBCTL_WORKERS"
ENV_JOB_NAME = "JOBCTL_JOB_NAME"
ENV_SERVICE = "JOBCTL_SERVICE"
ENV_NAMESPACE = "JOBCTL_NAMESPACE"
ENV_PORT = "JOBCTL_PORT"
ENV_INDEX = "JOB_COMPLETION_INDEX"  # set by Kubernetes for an Indexed Job
# JobSet: its controller writes these as pod annotations; the manifest maps them to variables (downward API).
ENV_JOBSET_NAME = "JOBSET_NAME"
ENV_REPLICATED_JOB = "JOBSET_REPLICATED_JOB"
ENV_JOB_INDEX = "JOBSET_JOB_INDEX"
ENV_PODS_PER_JOB = "JOBCTL_PODS_PER_JOB"


class TFConfigError(BadInputError):
    """The environment describes a multi-worker pod inconsistently; the message names the variable."""


def _int(env: Mapping[str, str], key: str, *, minimum: int, maximum: Optional[int] = None, default=None) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is not None:
            return default
        raise TFConfigError(f"{key} is not set; expected an integer >= {minimum} (set by the jobctl Job manifest)")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise TFConfigError(f"{key}: expected an integer, received {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise TFConfigError(f"{key}: expected an integer {bounds}, received {value}")
    return value


def _name(env: Mapping[str, str], key: str, manifest: str = "Job") -> str:
    raw = env.get(key)
    if not raw:
        raise TFConfigError(f"{key} is not set; expected a DNS-1123 label (set by the jobctl {manifest} manifest)")
    if len(raw) > 63 or not DNS1123_LABEL.fullmatch(raw):
        raise TFConfigError(f"{key}: expected a DNS-1123 label (lower-case letters, digits, '-'), received {raw!r}")
    return raw


def worker_hosts(job_name: str, service: str, workers: int, port: int, namespace: Optional[str] = None) -> list[str]:
    domain = f"{service}.{namespace}.svc" if namespace else service
    return [f"{job_name}-{i}.{domain}:{port}" for i in range(workers)]


def jobset_worker_hosts(jobset: str, replicated_job: str, workers: int, pods_per_job: int, service: str, port: int,
                        namespace: Optional[str] = None) -> list[str]:
    """Worker w is pod w % pods_per_job of child Job w // pods_per_job (JobSet's host naming)."""
    domain = f"{service}.{namespace}.svc" if namespace else service
    return [f"{jobset}-{replicated_job}-{w // pods_per_job}-{w % pods_per_job}.{domain}:{port}" for w in range(workers)]


def _jobset_config(env: Mapping[str, str], workers: int) -> dict[str, Any]:
    jobset = _name(env, ENV_JOBSET_NAME, "JobSet")
    replicated_job = _name(env, ENV_REPLICATED_JOB, "JobSet")
    pods_per_job = _int(env, ENV_PODS_PER_JOB, minimum=1, maximum=workers)
    if workers % pods_per_job:
        raise TFConfigError(f"{ENV_PODS_PER_JOB}: expected a divisor of {ENV_WORKERS}={workers} (every child Job runs "
                            f"the same number of pods), received {pods_per_job}")
    job_index = _int(env, ENV_JOB_INDEX, minimum=0, maximum=workers // pods_per_job - 1)
    pod_index = _int(env, ENV_INDEX, minimum=0, maximum=pods_per_job - 1)
    service = _name(env, ENV_SERVICE, "JobSet")
    namespace = _name(env, ENV_NAMESPACE, "JobSet") if env.get(ENV_NAMESPACE) else None
    port = _int(env, ENV_PORT, minimum=1, maximum=65535, default=DEFAULT_PORT)
    return {
        "cluster": {"worker": jobset_worker_hosts(jobset, replicated_job, workers, pods_per_job, service, port,
                                                  namespace)},
        "task": {"type": "worker", "index": job_index * pods_per_job + pod_index},
    }


def _check_explicit(raw: str) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TFConfigError(f"TF_CONFIG: expected JSON, received {raw[:80]!r} ({exc.msg})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise TFConfigError(f"TF_CONFIG: expected an object with 'cluster' and 'task', received {raw[:80]!r}")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or not isinstance(task.get("index"), int):
        raise TFConfigError(f"TF_CONFIG: expected 'task': {{'type': ..., 'index': int}}, received {task!r}")
    members = config["cluster"].get(task["type"])
    if not isinstance(members, list) or not 0 <= task["index"] < len(members):
        raise TFConfigError(
            f"TF_CONFIG: task {task['type']}[{task['index']}] is not in cluster {config['cluster']!r}"
        )
    return config


def tf_config_from_env(env: Mapping[str, str]) -> Optional[dict[str, Any]]:
    """The TF_CONFIG dict for this worker, or None when the pod is not part of a multi-worker job.

    Raises TFConfigError naming the variable, what it held and what was expected.
    """
    explicit = env.get("TF_CONFIG")
    if explicit:
        return _check_explicit(explicit)
    if env.get(ENV_WORKERS) in (None, ""):
        return None
    workers = _int(env, ENV_WORKERS, minimum=1, maximum=1024)
    if workers == 1:
        return None
    if env.get(ENV_JOBSET_NAME):
        return _jobset_config(env, workers)
    index = _int(env, ENV_INDEX, minimum=0, maximum=workers - 1)
    job_name = _name(env, ENV_JOB_NAME)
    service = _name(env, ENV_SERVICE)
    namespace = _name(env, ENV_NAMESPACE) if env.get(ENV_NAMESPACE) else None
    port = _int(env, ENV_PORT, minimum=1, maximum=65535, default=DEFAULT_PORT)
    return {
        "cluster": {"worker": worker_hosts(job_name, service, workers, port, namespace)},
        "task": {"type": "worker", "index": index},
    }
