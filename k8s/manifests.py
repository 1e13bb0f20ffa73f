"""Per-job Kubernetes objects, built as plain dicts by pure functions of the JobSpec (no templating).

`build_job_objects(spec)` returns, in creation order:
    ConfigMap  <name>-spec     the resolved spec, mounted read-only at /etc/jobctl/spec.yaml
    Service    <name>          headless, only when resources.workers > 1 (stable DNS per worker)
    Job        <name>          one pod (one node) or an Indexed Job (completions = parallelism = workers)

The multi-worker contract with the container (`jobs/distribute.py` reads it through `jobs.tf_config`):
    JOB_COMPLETION_INDEX   set by Kubernetes: this worker's index, 0 is the chief
    JOBCTL_WORKERS         number of workers
    JOBCTL_SERVICE         the headless Service; worker i is <JOBCTL_JOB_NAME>-<i>.<JOBCTL_SERVICE>
    JOBCTL_JOB_NAME        the Job's name (the Job controller names pod hosts <job>-<index>)
    JOBCTL_NAMESPACE       the pod's namespace, for fully qualified host names
    JOBCTL_PORT            the gRPC port every worker listens on (2222)

Nothing here talks to a cluster or imports TensorFlow; the only input besides the spec is `run_id`.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Mapping, Optional

from jobs import exit_codes, tf_config
from jobs.contract import ARTIFACTS_CLAIM, ARTIFACTS_MOUNT
from jobs.fsutil import atomic_write_text
from jobs.spec import JobSpec
from k8s import common, sizing
from k8s.common import ManifestError

TRAINER_CONTAINER = "trainer"
SPEC_MOUNT_DIR = "/etc/jobctl"
SPEC_KEY = "spec.yaml"
CACHE_MOUNT = "/cache"
# Default of the kustomize base (k8s/base): change both together. The artifacts claim is jobs.contract's.
SERVICE_ACCOUNT = "jobctl-training"
WORKER_PORT = tf_config.DEFAULT_PORT
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/your-org/jobctl-train"
# Unset deadlines leave stuck jobs holding GPUs forever; a week bounds that and is rarely hit by real runs.
DEFAULT_ACTIVE_DEADLINE_SECONDS = 7 * 24 * 3600
# Finished Jobs (and their pods, hence logs) stay this long for `jobctl status/logs`, then Kubernetes removes them.
DEFAULT_TTL_SECONDS_AFTER_FINISHED = 3 * 24 * 3600
# Time between SIGTERM and SIGKILL: the trainer saves its BackupAndRestore state and exits 75 within it.
TERMINATION_GRACE_SECONDS = 120
GPU_RESOURCE = "nvidia.com/gpu"
# GPU node pools are usually tainted nvidia.com/gpu:NoSchedule (GKE, the NVIDIA GPU operator's examples).
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
LABEL_RUN_ID = "jobctl.io/run-id"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # Kueue: the LocalQueue a Job is submitted to
LABEL_SPEC_HASH = "jobctl.io/spec-hash"

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_RUN_ID = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def default_image() -> str:
    """The training image matching this jobctl version (built and pushed by `make image`)."""
    return common.versioned_image(DEFAULT_IMAGE_REPOSITORY)


def new_run_id(now: Optional[datetime] = None) -> str:
    """UTC timestamp YYYYmmdd-HHMMSS, the run id format of the artifacts layout."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")


def spec_configmap_name(job_name: str) -> str:
    return f"{job_name}-spec"


def check_spec_for_kubernetes(spec: JobSpec, job_name: Optional[str] = None) -> list[str]:
    """Problems that make the spec valid locally but not runnable as a Kubernetes Job; empty when fine."""
    problems: list[str] = []
    name = job_name or spec.name
    try:
        common.validate_dns1123(name, "name", max_length=52)
    except ManifestError as exc:
        problems.append(str(exc))
    res = spec.resources
    strategy = spec.distribution.strategy
    if strategy == "mirrored" and res.gpus == 0:
        problems.append(
            "distribution.strategy 'mirrored' asks for several GPUs in one pod, but resources.gpus=0; "
            "expected resources.gpus >= 1 (a pod only gets the GPUs it requests), or strategy 'default'"
        )
    if res.workers > 1 and not _DNS1035_LABEL.fullmatch(name):
        problems.append(
            f"name: a multi-worker job needs a headless Service of the same name, and Service names must start "
            f"with a letter (DNS-1035); received {name!r}"
        )
    for key, value in res.node_selector.items():
        try:
            common.validate_label(key, value, "resources.node_selector")
        except ManifestError as exc:
            problems.append(str(exc))
    for key, value in spec.labels.items():
        try:
            common.validate_label(key, value, "labels")
        except ManifestError as exc:
            problems.append(str(exc))
    for i, tol in enumerate(res.tolerations):
        if tol.operator == "Exists" and tol.value:
            problems.append(
                f"resources.tolerations[{i}]: operator 'Exists' takes no value, received value {tol.value!r}"
            )
        if tol.key is None and tol.operator != "Exists":
            problems.append(f"resources.tolerations[{i}]: an empty key needs operator 'Exists', received {tol.operator!r}")
        if tol.toleration_seconds is not None and tol.effect != "NoExecute":
            problems.append(
                f"resources.tolerations[{i}]: toleration_seconds applies to effect 'NoExecute' only, "
                f"received effect {tol.effect!r}"
            )
    return problems


def job_labels(
    spec: JobSpec, job_name: str, run_id: str, extra_labels: Optional[Mapping[str, str]] = None
) -> dict[str, str]:
    extra: dict[str, str] = dict(spec.labels)
    extra.update(extra_labels or {})
    extra[common.LABEL_JOB] = job_name
    extra[LABEL_RUN_ID] = run_id
    extra[LABEL_SPEC_HASH] = spec.spec_hash()
    return common.labels(spec.model_name, "training", instance=job_name, extra=extra)


def data_path_warnings(spec: JobSpec) -> list[str]:
    """What will likely fail in the pod though the spec is valid: a `data.path` the pod cannot see. Only the
    artifacts claim is shared with the machine the job was written on; anything else resolves inside the image
    (working directory /app), which holds user data only in a custom image."""
    path = spec.data.path
    if not path:
        return []
    scheme = path.split("://", 1)[0].lower() if "://" in path else None
    if scheme == "gs" and spec.data.dataset == "tfrecord":
        return []  # read in place through tf.io.gfile (the pod needs GCS credentials, as for any gs:// access)
    if scheme is not None:
        readers = ("only data.dataset tfrecord reads gs:// (through tf.io.gfile); " if scheme == "gs" else
                   f"TensorFlow's own filesystems read gs:// but not {scheme}://; ")
        return [f"data.path {path!r} is not a local path: {readers}data.dataset {spec.data.dataset!r} will find "
                f"nothing; expected a gs:// packed directory, or the data copied onto the artifacts volume the pod "
                f"mounts at {ARTIFACTS_MOUNT} (an init container or a sync job)"]
    if PurePosixPath(path).is_relative_to(ARTIFACTS_MOUNT):
        return []
    return [f"data.path {path!r} is not on the artifacts volume the pod mounts at {ARTIFACTS_MOUNT}: in the pod it "
            f"resolves inside the image (working directory /app), so the job will find no data unless the image "
            f"holds it; expected a path under {ARTIFACTS_MOUNT}/ (copy the data onto the artifacts claim)"]


def _job_image(spec: JobSpec, image: Optional[str]) -> str:
    """--image, else the spec's resources.image, else the one of this jobctl version; a given one is checked."""
    if image is not None:
        return common.validate_image(image, "--image")
    if spec.resources.image is not None:
        return common.validate_image(spec.resources.image, "resources.image")
    return default_image()


def build_job_objects(
    spec: JobSpec,
    *,
    run_id: Optional[str] = None,
    extra_labels: Optional[Mapping[str, str]] = None,
    name: Optional[str] = None,
    namespace: Optional[str] = None,
    image: Optional[str] = None,
    artifacts_claim: str = ARTIFACTS_CLAIM,
    service_account: str = SERVICE_ACCOUNT,
    ttl_seconds_after_finished: int = DEFAULT_TTL_SECONDS_AFTER_FINISHED,
) -> list[dict]:
    """The objects of one training job, in creation order (ConfigMap, [Service], Job).

    `run_id` fixes the run directory so that a retried pod resumes the same run (default: now, UTC);
    `extra_labels` go on every object and pod (sweeps: jobctl.io/sweep, jobctl.io/trial);
    `name` overrides the Job name (default spec.name); `namespace` is set in metadata when given.
    Raises ManifestError listing every problem before anything could be created.
    """
    job_name = name or spec.name
    run_id = run_id or new_run_id()
    problems = check_spec_for_kubernetes(spec, job_name)
    if not _RUN_ID.fullmatch(run_id):
        problems.append(
            f"run_id: expected letters, digits, '-', '_', '.' (at most 63, usable as a label value), received {run_id!r}"
        )
    try:
        common.validate_dns1123(artifacts_claim, "artifacts_claim", max_length=253)
        common.validate_dns1123(service_account, "service_account", max_length=253)
        if namespace is not None:
            common.validate_dns1123(namespace, "namespace")
    except ManifestError as exc:
        problems.append(str(exc))
    if not problems:
        try:
            labels = job_labels(spec, job_name, run_id, extra_labels)
        except ManifestError as exc:
            problems.append(str(exc))
    if problems:
        raise ManifestError(_problems_text(job_name, problems))

    multi = spec.resources.workers > 1
    objects = [build_spec_configmap(spec, job_name, labels, namespace)]
    if multi:
        objects.append(build_headless_service(job_name, labels, namespace))
    objects.append(
        build_job(
            spec,
            job_name,
            labels,
            run_id=run_id,
            namespace=namespace,
            image=_job_image(spec, image),
            artifacts_claim=artifacts_claim,
            service_account=service_account,
            ttl_seconds_after_finished=ttl_seconds_after_finished,
        )
    )
    return objects


def _problems_text(job_name: str, problems: list[str]) -> str:
    head = f"job {job_name!r} cannot run on Kubernetes: {len(problems)} problem{'s' if len(problems) != 1 else ''}"
    return "\n".join([head] + [f"  - {p}" for p in problems])


def _metadata(name: str, labels: Mapping[str, str], namespace: Optional[str]) -> dict:
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    return meta


def build_spec_configmap(spec: JobSpec, job_name: str, labels: Mapping[str, str], namespace: Optional[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(spec_configmap_name(job_name), labels, namespace),
        # Immutable: a running job must never see its spec change under it; kubelets also stop watching it.
        "immutable": True,
        "data": {SPEC_KEY: spec.to_yaml()},
    }


def build_headless_service(job_name: str, labels: Mapping[str, str], namespace: Optional[str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job_name, labels, namespace),
        "spec": {
            "clusterIP": "None",
            # Workers resolve each other before they are Ready (there is no readiness probe to pass).
            "publishNotReadyAddresses": True,
            "selector": {common.LABEL_JOB: job_name},
            "ports": [{"name": "worker", "port": WORKER_PORT, "targetPort": WORKER_PORT, "protocol": "TCP"}],
        },
    }


def pod_failure_policy() -> dict:
    """Exit codes of jobs/exit_codes.py mapped to what the Job controller should do with a failed pod."""
    return {
        "rules": [
            # A wrong spec or missing data fails the same way on every retry: stop at once.
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": sorted(exit_codes.NON_RETRIABLE),
                },
            },
            # Eviction, preemption, node drain: not the job's fault, so it does not use up backoffLimit.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # SIGTERM after saving state (75) and an unreachable peer (76): retried, counted against backoffLimit
            # so that a worker that can never start cannot loop forever. Written out to make the intent visible.
            {
                "action": "Count",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": sorted(exit_codes.RETRIABLE),
                },
            },
        ]
    }


def _tolerations(spec: JobSpec) -> list[dict]:
    out = []
    for tol in spec.resources.tolerations:
        item: dict = {"operator": tol.operator}
        if tol.key is not None:
            item["key"] = tol.key
        if tol.value is not None:
            item["value"] = tol.value
        if tol.effect is not None:
            item["effect"] = tol.effect
        if tol.toleration_seconds is not None:
            item["tolerationSeconds"] = tol.toleration_seconds
        out.append(item)
    # GPU node pools are usually tainted nvidia.com/gpu:NoSchedule; a GPU job should land there without extra YAML.
    if spec.resources.gpus > 0 and not any(t.get("key") == GPU_RESOURCE for t in out):
        out.append(dict(GPU_TOLERATION))
    return out


def _resources(spec: JobSpec) -> dict:
    res = spec.resources
    size = sizing.pod_size(spec)
    # Requests = limits (Guaranteed QoS): a training pod is the last to be evicted under node memory pressure.
    requests = {"cpu": size.cpu, "memory": size.memory}
    limits = dict(requests)
    if res.gpus:
        limits[GPU_RESOURCE] = str(res.gpus)
    return {"requests": requests, "limits": limits}


def _env(spec: JobSpec, job_name: str, multi: bool) -> list[dict]:
    env = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},  # logs reach `jobctl logs` as they are printed
        {"name": "HOME", "value": "/tmp"},  # the root filesystem is read-only
        {"name": "KERAS_HOME", "value": f"{CACHE_MOUNT}/keras"},
        {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
        {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "1"},
        {"name": tf_config.ENV_JOB_NAME, "value": job_name},
        {"name": "JOBCTL_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": tf_config.ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if multi:
        env += [
            {"name": tf_config.ENV_WORKERS, "value": str(spec.resources.workers)},
            {"name": tf_config.ENV_SERVICE, "value": job_name},
            {"name": tf_config.ENV_PORT, "value": str(WORKER_PORT)},
        ]
    return env


def build_job(
    spec: JobSpec,
    job_name: str,
    labels: Mapping[str, str],
    *,
    run_id: str,
    namespace: Optional[str],
    image: str,
    artifacts_claim: str = ARTIFACTS_CLAIM,
    service_account: str = SERVICE_ACCOUNT,
    ttl_seconds_after_finished: int = DEFAULT_TTL_SECONDS_AFTER_FINISHED,
) -> dict:
    res = spec.resources
    workers = res.workers
    multi = workers > 1
    container = {
        "name": TRAINER_CONTAINER,
        "image": image,
        "imagePullPolicy": common.image_pull_policy(image),
        "command": ["python3", "-m", "jobs.train"],  # = the image ENTRYPOINT, stated for `kubectl describe`
        "args": [
            "--spec", f"{SPEC_MOUNT_DIR}/{SPEC_KEY}",
            "--artifacts-dir", ARTIFACTS_MOUNT,
            "--run-id", run_id,
        ],
        "env": _env(spec, job_name, multi),
        "resources": _resources(spec),
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_MOUNT_DIR, "readOnly": True},
            {"name": "artifacts", "mountPath": ARTIFACTS_MOUNT},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_MOUNT},
        ],
        "securityContext": common.container_security_context(read_only_root=True),
        # On a crash the last log lines become the termination message, which `jobctl status` shows.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if multi:
        container["ports"] = [{"name": "worker", "containerPort": WORKER_PORT, "protocol": "TCP"}]

    pod_spec: dict = {
        "restartPolicy": "Never",  # retries are pods the Job controller replaces, under podFailurePolicy
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,  # training never talks to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": common.pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "spec", "configMap": {"name": spec_configmap_name(job_name), "defaultMode": 0o444}},
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": artifacts_claim}},
            # /dev/shm is 64 MiB in containers by default; tf.data and NCCL need more. Counts against memory.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": sizing.pod_size(spec).shm_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}},
        ],
    }
    node_selector = dict(res.node_selector)
    if res.gpu_type:  # GPU feature discovery's (or GKE's, or the cluster's own) label naming the GPU model
        node_selector[res.gpu_label] = res.gpu_type
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if res.priority_class:
        pod_spec["priorityClassName"] = res.priority_class
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if multi:
        pod_spec["subdomain"] = job_name  # with the headless Service: <job>-<index>.<job> resolves

    job_spec: dict = {
        "completions": workers,
        "parallelism": workers,
        # One incident (a worker dies) fails every worker with exit 76, so each retry costs `workers` failures.
        "backoffLimit": res.backoff_limit * workers,
        "activeDeadlineSeconds": res.active_deadline_seconds or DEFAULT_ACTIVE_DEADLINE_SECONDS,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        # A replacement starts only once the old pod is gone: never two pods of one index
        # ("Duplicate task registration" in the collective ops). Required by podFailurePolicy anyway.
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if multi:
        job_spec["completionMode"] = "Indexed"
    metadata = _metadata(job_name, labels, namespace)
    if res.queue:
        # Kueue admits the Job by un-suspending it; created suspended, no pod starts before admission, also when
        # the manifest is applied with kubectl.
        metadata["labels"][QUEUE_LABEL] = res.queue
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": job_spec,
    }


def find_job(objects: list[dict]) -> dict:
    jobs = [o for o in objects if o.get("kind") == "Job"]
    if len(jobs) != 1:
        raise ManifestError(f"expected exactly one Job among the objects, received {len(jobs)}")
    return jobs[0]


def to_yaml_documents(objects: list[dict]) -> str:
    import yaml

    return "---\n".join(yaml.safe_dump(copy.deepcopy(o), sort_keys=False) for o in objects)


def write_manifests(objects: list[dict], out_dir: Path) -> list[Path]:
    """One `NN-kind-name.yaml` file per object in `out_dir`, each written atomically; returns their paths.

    Numbered so that `kubectl apply -f DIR` creates objects in list order (ConfigMap and Service before the Job).
    """
    import yaml

    return [
        atomic_write_text(Path(out_dir) / f"{i:02d}-{o['kind'].lower()}-{o['metadata']['name']}.yaml",
                          yaml.safe_dump(o, sort_keys=False))
        for i, o in enumerate(objects)
    ]
