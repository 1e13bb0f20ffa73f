"""`jobctl deploy --format kserve`: the model as one KServe InferenceService (serving.kserve.io/v1beta1). Pure.

KServe's TensorFlow runtime (ClusterServingRuntime `kserve-tensorflow-serving`, kserve v0.20.0
config/runtimes/kserve-tensorflow-serving.yaml) runs the stock `tensorflow/serving` binary with
`--model_name=<InferenceService name> --model_base_path=/mnt/models --port=9000 --rest_api_port=8080`; its
image tag is the InferenceService's `runtimeVersion`. KServe's storage initializer (an init container KServe
adds) copies `storageUri` (gs://, s3://, pvc://<claim>/<path>, https://) into /mnt/models first, so s3 works
here even though the stock image has no s3 filesystem (tensorflow/serving#1963).

What the user meets that differs from `jobctl deploy`'s Deployment:
- the model is served under the InferenceService's name (the runtime passes it as --model_name), so that name
  defaults to the model's own name in DNS form;
- REST (KServe's v1 protocol = TF Serving's REST API) is the default; `grpc=True` exposes the runtime's gRPC
  port instead: 9000 named `h2c` (KServe's documented way; a Knative-served predictor exposes one port). The
  runtime fixes 9000: it is not 8500 as in `jobctl deploy`, and KServe's TF runtime offers no way to move it;
- object-store credentials come from a service account KServe's storage initializer reads
  (`service_account`, the Secret referenced there), never from the manifest;
- GPUs (`gpus`): the nvidia.com/gpu limit, tensorflow/serving's CUDA build (`<version>-gpu`), the toleration of
  GPU node pools' usual taint, and with `gpu_type` a node selector on `gpu_label`, as training's
  resources.gpus / gpu_type / gpu_label render them. The Deployment format has no GPU option: its image
  (Dockerfile.serve) is TF Serving's CPU build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional

from jobs.contract import ARTIFACTS_MOUNT
from jobs.spec.cluster import GPU_PRODUCT_LABEL
from k8s import common, serving_manifests
from k8s.manifests import GPU_RESOURCE, GPU_TOLERATION
from k8s.common import ManifestError

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
GROUP, _, VERSION = API_VERSION.partition("/")
PLURAL = "inferenceservices"
MODEL_FORMAT = "tensorflow"
# The TF Serving release the images are built on (Dockerfile.serve: tensorflow/serving:2.21.0). Pinned: KServe's
# runtime default (2.6.2 in v0.20.0) predates the TensorFlow that exports jobctl's models.
RUNTIME_VERSION = "2.21.0"
RUNTIME_GRPC_PORT = 9000  # kserve-tensorflow-serving: --port=9000
RUNTIME_REST_PORT = 8080  # kserve-tensorflow-serving: --rest_api_port=8080
STORAGE_URI = re.compile(r"^(gs|s3)://[a-z0-9][-a-z0-9._]{1,61}[a-z0-9](/[^\s]*)?$|^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[^\s]*)?$"
                         r"|^https://[^\s/]+/[^\s]+$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-gpu)?$")


@dataclass
class InferenceServiceOptions:
    storage_uri: str  # gs://bucket/models/m, s3://bucket/models/m, pvc://claim/models/m (the versions' parent)
    name: str
    namespace: Optional[str] = None
    runtime_version: str = RUNTIME_VERSION
    min_replicas: int = 1
    max_replicas: int = 1
    cpu: str = "1"
    memory: str = "1Gi"
    gpus: int = 0
    gpu_type: Optional[str] = None  # e.g. NVIDIA-L4, as the nodes' gpu_label names it
    gpu_label: str = GPU_PRODUCT_LABEL  # cloud.google.com/gke-accelerator on GKE
    grpc: bool = False
    service_account: Optional[str] = None
    raw_deployment: bool = False  # KServe's RawDeployment mode (a Deployment + HPA, no Knative)
    labels: dict[str, str] = field(default_factory=dict)


def pvc_uri(claim: str, path_in_claim: str) -> str:
    """KServe's way to name a directory on a PersistentVolumeClaim."""
    return f"pvc://{claim}/{path_in_claim.strip('/')}"


def dns_name(model_name: str) -> str:
    """The InferenceService name for a model name: lower case, '_' and '.' to '-' (KServe serves under it)."""
    return re.sub(r"[^a-z0-9-]", "-", model_name.lower()).strip("-")


def check(opts: InferenceServiceOptions) -> list[str]:
    problems = []
    if not isinstance(opts.name, str) or len(opts.name) > 63 or not _DNS1035.fullmatch(opts.name):
        problems.append(f"--name: an InferenceService name is a DNS-1035 label (lower-case letters, digits, '-', "
                        f"starting with a letter, at most 63 characters), received {opts.name!r}")
    if opts.namespace is not None:
        try:
            common.validate_dns1123(opts.namespace, "--namespace")
        except ManifestError as exc:
            problems.append(str(exc))
    if not STORAGE_URI.fullmatch(opts.storage_uri or ""):
        problems.append(f"BASE_PATH: KServe reads gs://, s3://, pvc://<claim>/<path> or https:// storage URIs, "
                        f"received {opts.storage_uri!r}")
    if not _VERSION.fullmatch(opts.runtime_version or ""):
        problems.append(f"--runtime-version: expected a tensorflow/serving release such as {RUNTIME_VERSION}, "
                        f"received {opts.runtime_version!r}")
    if opts.min_replicas < (1 if opts.raw_deployment else 0):
        problems.append(f"--replicas: expected >= {1 if opts.raw_deployment else 0}, received {opts.min_replicas}")
    if opts.max_replicas < max(opts.min_replicas, 1):
        problems.append(f"--hpa-max: expected >= --replicas ({opts.min_replicas}) and >= 1, received {opts.max_replicas}")
    for flag, value in (("--cpu", opts.cpu), ("--memory", opts.memory)):
        m = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
        if not m or not _positive(m.group(1)):
            problems.append(f"{flag}: expected a Kubernetes quantity above zero (e.g. '500m', '2', '1Gi'), received {value!r}")
    if not 0 <= opts.gpus <= 16:
        problems.append(f"--gpus: expected 0..16, received {opts.gpus}")
    if opts.gpu_type is not None:
        if not opts.gpus:
            problems.append(f"--gpu-type: {opts.gpu_type!r} selects GPU nodes but --gpus is 0; expected --gpus >= 1")
        try:
            common.validate_label(opts.gpu_label, opts.gpu_type, "--gpu-type/--gpu-label")
        except ManifestError as exc:
            problems.append(str(exc))
    if opts.service_account is not None:
        try:
            common.validate_dns1123(opts.service_account, "--service-account", max_length=253)
        except ManifestError as exc:
            problems.append(str(exc))
    return problems


def _positive(number: str) -> bool:
    try:
        return float(number) > 0
    except ValueError:
        return False


def build_inference_service(opts: InferenceServiceOptions, model_name: Optional[str] = None) -> dict:
    """The InferenceService; ManifestError listing every problem when the options cannot make one."""
    problems = check(opts)
    if problems:
        raise ManifestError(f"cannot render an InferenceService: {len(problems)} problem"
                            f"{'s' if len(problems) != 1 else ''}\n" + "\n".join(f"  - {p}" for p in problems))
    labels = common.labels(model_name or opts.name, "serving", instance=opts.name, extra=opts.labels)
    requests = {"cpu": opts.cpu, "memory": opts.memory}
    limits = dict(requests)
    if opts.gpus:
        limits[GPU_RESOURCE] = str(opts.gpus)
    runtime_version = opts.runtime_version
    if opts.gpus and not runtime_version.endswith("-gpu"):
        runtime_version += "-gpu"  # tensorflow/serving:<version>-gpu is the CUDA build (KServe's gpu.yaml sample)
    model: dict = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtimeVersion": runtime_version,
        "storageUri": opts.storage_uri,
        "resources": {"requests": requests, "limits": limits},  # requests = limits: Guaranteed QoS
        "securityContext": common.container_security_context(read_only_root=True),
        # TF Serving writes nothing but temporary files; the root file system stays read-only.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if opts.grpc:
        model["ports"] = [{"name": "h2c", "containerPort": RUNTIME_GRPC_PORT, "protocol": "TCP"}]
    predictor: dict = {
        "minReplicas": opts.min_replicas,
        "maxReplicas": opts.max_replicas,
        "model": model,
        "securityContext": common.pod_security_context(),
        "automountServiceAccountToken": False,
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if opts.gpus:
        predictor["tolerations"] = [dict(GPU_TOLERATION)]
    if opts.gpu_type:
        predictor["nodeSelector"] = {opts.gpu_label: opts.gpu_type}
    if opts.service_account:
        predictor["serviceAccountName"] = opts.service_account
    metadata: dict = {"name": opts.name}
    if opts.namespace:
        metadata["namespace"] = opts.namespace
    metadata["labels"] = labels
    if opts.raw_deployment:
        metadata["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {"predictor": predictor}}


def from_deploy_options(opts: "serving_manifests.DeployOptions", *, grpc: bool = False,
                        service_account: Optional[str] = None, runtime_version: str = RUNTIME_VERSION,
                        raw_deployment: bool = False, gpus: int = 0, gpu_type: Optional[str] = None,
                        gpu_label: str = GPU_PRODUCT_LABEL) -> dict:
    """`jobctl deploy --format kserve`: the InferenceService for the same BASE_PATH and options as the Deployment.

    A path on the artifacts volume becomes pvc://<--pvc>/<path in the claim>; gs:// and s3:// are kept (KServe's
    storage initializer copies them in); --replicas and --hpa-max are the min and max replicas."""
    model, _ = serving_manifests.names(opts)
    path, remote = serving_manifests.model_path(opts)
    if remote:
        uri = opts.base_path.rstrip("/")
    else:
        common.validate_dns1123(opts.pvc, "--pvc", max_length=253)
        uri = pvc_uri(opts.pvc, str(PurePosixPath(path).relative_to(ARTIFACTS_MOUNT)))
    return build_inference_service(InferenceServiceOptions(
        storage_uri=uri, name=opts.name or dns_name(model), namespace=opts.namespace, runtime_version=runtime_version,
        min_replicas=opts.replicas, max_replicas=opts.hpa_max_replicas or opts.replicas, cpu=opts.cpu,
        memory=opts.memory, gpus=gpus, gpu_type=gpu_type, gpu_label=gpu_label, grpc=grpc,
        service_account=service_account, raw_deployment=raw_deployment,
    ), model_name=model)
