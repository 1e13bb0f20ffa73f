"""Kubernetes objects that run the stock TensorFlow Serving image (Dockerfile.serve) on an exported model.

`build_manifests(DeployOptions)` is pure (plain dicts, no client, no TensorFlow), beside the training manifests
(k8s/manifests.py) and sharing their labels, security contexts and image pull policy (k8s/common.py);
`k8s.deploy.apply()` creates or updates them through the shared transport.

Objects, in creation order:
    ConfigMap   <name>-config     models.config (name, base path, version policy), batching.config, monitoring.config
    Deployment  <name>            TF Serving; rolling update that never drops below the wanted replicas
    Service     <name>            ClusterIP: gRPC 8500, REST + /monitoring/prometheus/metrics 8501
    Service     <name>-headless   optional: one DNS A record per ready pod, for client-side round_robin
                                  (a gRPC connection otherwise sticks to one pod, serving#1618)
    PodDisruptionBudget <name>    when replicas > 1: voluntary evictions leave at least one pod serving
    HorizontalPodAutoscaler       optional: CPU based

Readiness means "the model is AVAILABLE" (serving#671, #1754): the probe GETs the REST endpoint
`/v1/models/<model>/metadata`, which TF Serving answers 200 only with a loaded version (404 before), with no
sidecar and no binary added to the image. Liveness is gRPC health on 8500 (`--enable_grpc_healthcheck_service`):
it says the process answers, and does not restart a pod that is still loading a big model (a startup probe
covers loading).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterable, Optional

from jobs.contract import ARTIFACTS_CLAIM, ARTIFACTS_MOUNT, pod_path
from jobs.spec.fields import QUANTITY, quantity_is_positive
from k8s import common, object_store

GRPC_PORT = 8500
REST_PORT = 8501
CONFIG_DIR = "/etc/jobctl-serving"
DEFAULT_IMAGE_REPOSITORY = "ghcr.io/your-org/jobctl-serve"
GCS_KEY_DIR, GCS_KEY = "/var/run/secrets/object-store", "key.json"


def default_image() -> str:
    """The serving image `make image` builds and pushes for this jobctl version (as the training image's tag)."""
    return common.versioned_image(DEFAULT_IMAGE_REPOSITORY)


COMPONENT = "serving"
OBJECT_STORE = re.compile(r"^(gs|s3)://[^/]+(/.*)?$")


class DeployError(common.ManifestError):
    """Options that cannot produce a deployment; names the option, the value and what is expected. A bad input:
    exit 2 wherever it is raised (what the cluster answers is a k8s.errors.KubeError, exit 1)."""


@dataclass
class BatchingParameters:
    """TF Serving's batching_parameters (same names as `jobctl serve`'s options)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 64
    num_batch_threads: int = 2

    def text(self) -> str:
        return (
            f"max_batch_size {{ value: {self.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}\n"
            f"max_enqueued_batches {{ value: {self.max_enqueued_batches} }}\n"
            f"num_batch_threads {{ value: {self.num_batch_threads} }}\n"
        )


@dataclass
class DeployOptions:
    base_path: str  # local path under artifacts_dir (the PVC's content) or gs:// / s3:// URI
    model_name: Optional[str] = None
    name: Optional[str] = None
    namespace: str = "default"
    replicas: int = 2
    image: str = field(default_factory=default_image)
    artifacts_dir: str = "artifacts"
    pvc: str = ARTIFACTS_CLAIM
    object_store_secret: Optional[str] = None
    headless: bool = False
    hpa_max_replicas: Optional[int] = None
    hpa_cpu_percent: int = 70
    cpu: str = "1"
    memory: str = "1Gi"
    batching: bool = True
    batching_parameters: BatchingParameters = field(default_factory=BatchingParameters)
    num_versions: int = 1
    poll_seconds: int = 30
    version_labels: dict[str, int] = field(default_factory=dict)
    # s3:// on the stock image: copied in by these containers' image (k8s/object_store.py)
    s3_copy_image: str = object_store.COPY_IMAGE


def _model_path(opts: DeployOptions) -> tuple[str, bool]:
    """(model_base_path inside the container, from object store?)."""
    if "://" in opts.base_path:
        if not OBJECT_STORE.match(opts.base_path):
            raise DeployError(f"BASE_PATH: expected a path under --artifacts-dir or a gs:// or s3:// URI, received {opts.base_path!r}")
        return opts.base_path.rstrip("/"), True
    base = PurePosixPath(opts.base_path.replace("\\", "/"))
    root = PurePosixPath(opts.artifacts_dir.replace("\\", "/"))
    try:
        rel = base.relative_to(root)
    except ValueError:
        raise DeployError(
            f"BASE_PATH: {opts.base_path!r} is not under --artifacts-dir {opts.artifacts_dir!r}; the pod sees the "
            f"artifacts volume at {ARTIFACTS_MOUNT}, so the model must live on it (e.g. {opts.artifacts_dir}/models/<name>) "
            "or in an object store (gs://, s3://)"
        ) from None
    if ".." in rel.parts or not rel.parts:
        raise DeployError(f"BASE_PATH: expected a model directory below {opts.artifacts_dir!r}, received {opts.base_path!r}")
    return pod_path(*rel.parts), False


model_path = _model_path  # public: k8s/kserve.py maps the same BASE_PATH to a storage URI


def _check(opts: DeployOptions) -> None:
    problems = []
    for fname in ("cpu", "memory"):
        v = getattr(opts, fname)
        if not isinstance(v, str) or not QUANTITY.fullmatch(v):
            problems.append(f"--{fname}: expected a Kubernetes quantity (e.g. '500m', '2', '1Gi'), received {v!r}")
        elif not quantity_is_positive(v):
            problems.append(f"--{fname}: expected a quantity above zero (e.g. '500m', '2', '1Gi'), received {v!r}")
    if opts.replicas < 1:
        problems.append(f"--replicas: expected >= 1, received {opts.replicas}")
    if opts.hpa_max_replicas is not None and opts.hpa_max_replicas < opts.replicas:
        problems.append(f"--hpa-max: expected >= --replicas ({opts.replicas}), received {opts.hpa_max_replicas}")
    if not 1 <= opts.hpa_cpu_percent <= 100:
        problems.append(f"--hpa-cpu: expected 1..100, received {opts.hpa_cpu_percent}")
    try:
        common.validate_image(opts.image, "--image")
    except common.ManifestError as exc:
        problems.append(str(exc))
    if opts.object_store_secret is not None and "://" not in opts.base_path:
        problems.append("--object-store-secret applies to gs:// or s3:// base paths; the model is on the artifacts volume")
    if problems:
        raise DeployError("; ".join(problems))


def names(opts: DeployOptions) -> tuple[str, str]:
    """(model name, object name). The model name defaults to the base path's last component (TF Serving's pairing
    of --model_name with --model_base_path)."""
    model = opts.model_name or PurePosixPath(opts.base_path.rstrip("/").split("://")[-1]).name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", model or ""):
        if opts.model_name:
            raise DeployError(f"--model-name: expected letters, digits, '_', '.', '-', received {model!r}")
        raise DeployError(f"BASE_PATH {opts.base_path!r}: its last component {model!r} names the model, and a model "
                          "name is letters, digits, '_', '.', '-'; expected a path such as artifacts/models/ensemble "
                          "or gs://bucket/models/ensemble, or give --model-name")
    name = opts.name or f"{model.lower().replace('_', '-').replace('.', '-')}-serving"
    common.validate_dns1123(name, "--name", max_length=54)  # room for "-headless"
    common.validate_dns1123(opts.namespace, "--namespace")
    return model, name


def models_config(model: str, base_path: str, num_versions: int = 1, labels: Optional[dict[str, int]] = None) -> str:
    """TF Serving's ModelServerConfig (text proto)."""
    lines = [
        "model_config_list {",
        "  config {",
        f'    name: "{model}"',
        f'    base_path: "{base_path}"',
        '    model_platform: "tensorflow"',
        f"    model_version_policy {{ latest {{ num_versions: {num_versions} }} }}",
    ]
    for label, version in sorted((labels or {}).items()):
        lines.append(f'    version_labels {{ key: "{label}" value: {int(version)} }}')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


MONITORING_CONFIG = 'prometheus_config {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n'


def build_manifests(opts: DeployOptions) -> list[dict]:
    _check(opts)
    model, name = names(opts)
    base_path, remote = _model_path(opts)
    if _copied_in(opts):  # the stock image cannot read s3 (serving#1963): TF Serving reads the local copy
        base_path = object_store.local_model_dir(model)
    lbl = common.labels(name, COMPONENT, extra={"jobctl.io/model": _label_value(model)})
    selector = {k: lbl[k] for k in (common.LABEL_NAME, common.LABEL_INSTANCE, common.LABEL_COMPONENT)}
    meta = lambda n: {"name": n, "namespace": opts.namespace, "labels": dict(lbl)}  # noqa: E731

    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(f"{name}-config"),
        "data": {
            "models.config": models_config(model, base_path, opts.num_versions, opts.version_labels),
            "batching.config": opts.batching_parameters.text(),
            "monitoring.config": MONITORING_CONFIG,
        },
    }
    objects = [config, _deployment(opts, name, model, remote, lbl, selector, meta), _service(name, selector, meta, headless=False)]
    if opts.headless:
        objects.append(_service(f"{name}-headless", selector, meta, headless=True))
    if opts.replicas > 1 or (opts.hpa_max_replicas or 0) > 1:
        objects.append({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
        })
    if opts.hpa_max_replicas:
        objects.append({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta(name),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": opts.replicas,
                "maxReplicas": opts.hpa_max_replicas,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": opts.hpa_cpu_percent}}}],
            },
        })
    # Plain, unshared dicts: YAML output without anchors, callers may mutate one object safely.
    return json.loads(json.dumps(objects))


def _copied_in(opts: DeployOptions) -> bool:
    return opts.base_path.startswith("s3://")


def _label_value(v: str) -> str:
    v = re.sub(r"[^A-Za-z0-9_.-]", "-", v)[:63].strip("-_.")
    return v or "model"


def _deployment(opts, name, model, remote, lbl, selector, meta) -> dict:
    args = [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={CONFIG_DIR}/models.config",
        f"--file_system_poll_wait_seconds={opts.poll_seconds}",
        f"--monitoring_config_file={CONFIG_DIR}/monitoring.config",
        "--enable_grpc_healthcheck_service=true",
    ]
    if opts.batching:
        args += ["--enable_batching=true", f"--batching_parameters_file={CONFIG_DIR}/batching.config"]
    if opts.version_labels:
        args.append("--allow_version_labels_for_unavailable_models=true")
    metadata_path = f"/v1/models/{model}/metadata"
    container = {
        "name": "tfserving",
        "image": opts.image,
        "imagePullPolicy": common.image_pull_policy(opts.image),
        "args": args,
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": opts.cpu, "memory": opts.memory},
            "limits": {"cpu": opts.cpu, "memory": opts.memory},
        },
        # Loading can take minutes for big models: the startup probe allows 10 min before liveness applies.
        "startupProbe": {"httpGet": {"path": metadata_path, "port": "http"}, "periodSeconds": 5, "failureThreshold": 120},
        "readinessProbe": {"httpGet": {"path": metadata_path, "port": "http"}, "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 3},
        "livenessProbe": {"grpc": {"port": GRPC_PORT}, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
        # Endpoints drop a terminating pod asynchronously: keep answering a few seconds before TF Serving stops.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "securityContext": common.container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "config", "configMap": {"name": f"{name}-config"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    init: list[dict] = []
    sidecars: list[dict] = []
    if remote:
        if opts.object_store_secret and not _copied_in(opts):
            common.validate_dns1123(opts.object_store_secret, "--object-store-secret", max_length=253)
            if opts.base_path.startswith("gs://"):
                # Google's client reads a key *file*: the Secret's key.json, mounted read-only (the root file
                # system is read-only, and an environment variable cannot hold a file).
                container["volumeMounts"].append({"name": "object-store-key", "mountPath": GCS_KEY_DIR, "readOnly": True})
                volumes.append({"name": "object-store-key", "secret": {"secretName": opts.object_store_secret,
                                                                        "items": [{"key": GCS_KEY, "path": GCS_KEY}]}})
                container.setdefault("env", []).append(
                    {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIR}/{GCS_KEY}"})
        if _copied_in(opts):
            # s3: an init container copies the versions into a volume, a sidecar copies new ones; only they get
            # the Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, S3_ENDPOINT), TF Serving none.
            init, sidecars, copy_volumes = object_store.copy_containers(
                opts.base_path, model, secret=opts.object_store_secret, num_versions=opts.num_versions,
                keep_versions=opts.version_labels.values(), poll_seconds=opts.poll_seconds, image=opts.s3_copy_image)
            container["volumeMounts"].append(
                {"name": object_store.VOLUME, "mountPath": object_store.MODELS_DIR, "readOnly": True})
            volumes += copy_volumes
    else:
        common.validate_dns1123(opts.pvc, "--pvc", max_length=253)
        container["volumeMounts"].append({"name": "artifacts", "mountPath": ARTIFACTS_MOUNT, "readOnly": True})
        volumes.append({"name": "artifacts", "persistentVolumeClaim": {"claimName": opts.pvc, "readOnly": True}})
    pod_labels = dict(lbl)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name),
        "spec": {
            "replicas": opts.replicas,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 5,
            "minReadySeconds": 5,
            "progressDeadlineSeconds": 900,
            # Capacity never drops during a rollout: a new pod must be ready (model AVAILABLE) before an old goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(REST_PORT),
                                    "prometheus.io/path": "/monitoring/prometheus/metrics"},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": common.pod_security_context(),
                    "terminationGracePeriodSeconds": 30,
                    **({"initContainers": init} if init else {}),
                    "containers": [container, *sidecars],
                    "volumes": volumes,
                    # Spread replicas so one node going away does not take the whole model down.
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": selector},
                    }],
                },
            },
        },
    }


def _service(name, selector, meta, headless: bool) -> dict:
    spec = {
        "selector": selector,
        "ports": [
            {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        ],
    }
    if headless:
        spec["clusterIP"] = "None"
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name), "spec": spec}


def to_yaml(objects: Iterable[dict]) -> str:
    import yaml

    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)


# ----------------------------------------------------------------------------------------------- kustomize
KUSTOMIZE_OPTIONS = DeployOptions(base_path="artifacts/models/ensemble", headless=True, image="ghcr.io/your-org/jobctl-serve:0.1.0")


def kustomize_files(opts: DeployOptions = KUSTOMIZE_OPTIONS) -> dict[str, str]:
    """k8s/serving/: the same objects as `jobctl deploy`, without namespace (kustomize sets it), plus a
    kustomization.yaml. tests/test_k8s_deploy.py keeps the committed directory equal to this."""
    import yaml

    files: dict[str, str] = {}
    resources = []
    header = "# Generated by k8s.serving_manifests.kustomize_files() (jobctl deploy's builders); edit through an overlay.\n"
    for obj in build_manifests(opts):
        obj["metadata"].pop("namespace", None)
        fname = f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        files[fname] = header + yaml.safe_dump(obj, sort_keys=False)
        resources.append(fname)
    files["kustomization.yaml"] = header + (
        "# Serve artifacts/models/ensemble from the artifacts PVC of k8s/base with the stock TF Serving image\n"
        "# (Dockerfile.serve):  kubectl apply -k k8s/serving -n <namespace>\n"
        "# Other models: `jobctl deploy artifacts/models/<name> -o DIR`, or an overlay patching the ConfigMap.\n"
    ) + yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}, sort_keys=False)
    return files


if __name__ == "__main__":  # python -m k8s.serving_manifests k8s/serving  (regenerates the kustomize directory)
    import sys
    from pathlib import Path

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "k8s/serving")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.yaml"):
        stale.unlink()
    for fname, text in kustomize_files().items():
        (out / fname).write_text(text)
        print(out / fname)
