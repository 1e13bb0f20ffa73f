"""`deploy --format kserve` (k8s/kserve.py): InferenceServices valid against KServe's vendored CRD, TF Serving
runtime pinned, storage URIs, replicas, resources, the security context, gRPC where the runtime offers it."""

from __future__ import annotations

import pytest

from k8s import common
from k8s.common import ManifestError
from k8s.kserve import InferenceServiceOptions, build_inference_service, dns_name, pvc_uri
from tests.support import crds

CASES = {
    "gs-rest": InferenceServiceOptions("gs://models-bucket/models/ensemble", "ensemble", namespace="ml"),
    "s3-grpc": InferenceServiceOptions("s3://models-bucket/models/ensemble", "ensemble", namespace="ml", grpc=True,
                                       service_account="s3-reader", min_replicas=2, max_replicas=6),
    "pvc-gpu-raw": InferenceServiceOptions(pvc_uri("jobctl-artifacts", "models/digits-cnn/"), "digits-cnn", gpus=1,
                                           raw_deployment=True, cpu="4", memory="8Gi", labels={"team": "vision"}),
    "gke-gpu-type": InferenceServiceOptions("gs://models-bucket/models/ensemble", "ensemble", gpus=2,
                                            gpu_type="nvidia-l4", gpu_label="cloud.google.com/gke-accelerator"),
    "scale-to-zero": InferenceServiceOptions("gs://models-bucket/models/ensemble", "ensemble", min_replicas=0,
                                             max_replicas=3),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_valid_for_kserves_crd(case):
    crds.validate(build_inference_service(CASES[case]))


def test_kserves_crd_has_no_rules_the_validator_skips():
    assert crds.cel_rules("serving.kserve.io/v1beta1", "InferenceService") == []


def test_crd_validation_can_fail():
    isvc = build_inference_service(CASES["gs-rest"])
    isvc["spec"]["predictor"]["model"]["modelFormat"]["nme"] = "tensorflow"
    isvc["spec"]["predictor"]["minReplicas"] = "1"
    found = "\n".join(crds.problems(isvc))
    assert "spec.predictor.model.modelFormat: Additional properties are not allowed ('nme' was unexpected)" in found
    assert "spec.predictor.minReplicas: '1' is not of type 'integer'" in found


def test_tensorflow_runtime_pinned_with_storage_and_resources():
    isvc = build_inference_service(CASES["s3-grpc"], model_name="ensemble")
    pred = isvc["spec"]["predictor"]
    model = pred["model"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert model["modelFormat"] == {"name": "tensorflow"}
    assert model["runtimeVersion"] == "2.21.0"  # the TF Serving of Dockerfile.serve, not KServe's default 2.6.2
    assert model["storageUri"] == "s3://models-bucket/models/ensemble"
    assert model["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 6)
    # gRPC: KServe's TF runtime listens on 9000 (its --port); naming the port h2c makes the predictor speak gRPC.
    assert model["ports"] == [{"name": "h2c", "containerPort": 9000, "protocol": "TCP"}]
    assert pred["serviceAccountName"] == "s3-reader"  # credentials: the Secret KServe's storage initializer reads
    assert "env" not in model and "envFrom" not in model


def test_rest_by_default_and_gpu_runtime_image():
    assert "ports" not in build_inference_service(CASES["gs-rest"])["spec"]["predictor"]["model"]
    gpu = build_inference_service(CASES["pvc-gpu-raw"])
    model = gpu["spec"]["predictor"]["model"]
    assert model["runtimeVersion"] == "2.21.0-gpu"  # tensorflow/serving's CUDA build
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert model["storageUri"] == "pvc://jobctl-artifacts/models/digits-cnn"
    assert gpu["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    assert gpu["metadata"]["labels"]["team"] == "vision"


@pytest.mark.parametrize("case", sorted(CASES))
def test_pod_is_hardened(case):
    pred = build_inference_service(CASES[case])["spec"]["predictor"]
    assert pred["model"]["securityContext"] == common.container_security_context(read_only_root=True)
    assert pred["securityContext"] == common.pod_security_context()
    assert pred["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in pred["model"]["volumeMounts"]


def test_served_model_name_is_the_inference_service_name():
    assert dns_name("Digits_CNN.v2") == "digits-cnn-v2"
    isvc = build_inference_service(InferenceServiceOptions("gs://bucket-1/models/x", dns_name("ensemble")), "ensemble")
    assert isvc["metadata"]["name"] == "ensemble"
    assert isvc["metadata"]["labels"][common.LABEL_NAME] == "ensemble"


@pytest.mark.parametrize("changes, needle", [
    ({"name": "9lives"}, "--name: an InferenceService name is a DNS-1035 label"),
    ({"storage_uri": "ftp://host/models/m"}, "BASE_PATH: KServe reads gs://, s3://, pvc://<claim>/<path> or https://"),
    ({"storage_uri": "artifacts/models/m"}, "received 'artifacts/models/m'"),
    ({"runtime_version": "latest"}, "--runtime-version: expected a tensorflow/serving release such as 2.21.0"),
    ({"min_replicas": 3, "max_replicas": 2}, "--hpa-max: expected >= --replicas (3)"),
    ({"raw_deployment": True, "min_replicas": 0}, "--replicas: expected >= 1, received 0"),
    ({"memory": "lots"}, "--memory: expected a Kubernetes quantity above zero"),
    ({"service_account": "S3 Reader"}, "--service-account: expected a DNS-1123 label"),
    ({"gpu_type": "NVIDIA-L4"}, "--gpu-type: 'NVIDIA-L4' selects GPU nodes but --gpus is 0; expected --gpus >= 1"),
    ({"gpus": 1, "gpu_type": "NVIDIA L4"}, "label 'nvidia.com/gpu.product' has invalid value 'NVIDIA L4'"),
    ({"gpus": 1, "gpu_type": "x", "gpu_label": "bad label"}, "label key 'bad label' is invalid"),
])
def test_bad_options_are_named(changes, needle):
    opts = InferenceServiceOptions("gs://models-bucket/models/ensemble", "ensemble")
    for key, value in changes.items():
        setattr(opts, key, value)
    with pytest.raises(ManifestError) as info:
        build_inference_service(opts)
    assert needle in str(info.value)


# -------------------------------------------------------------------------------- `jobctl deploy --format kserve`
def deploy(*args):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["deploy", *map(str, args)])
    return result.exit_code, result.output


def test_cli_dry_run_renders_a_valid_inference_service_on_the_artifacts_claim():
    import yaml

    code, out = deploy("artifacts/models/ensemble", "--format", "kserve", "--dry-run", "--replicas", "2",
                       "--hpa-max", "5", "--grpc", "--service-account", "model-reader", "-n", "ml")
    assert code == 0, out
    (isvc,) = [d for d in yaml.safe_load_all(out) if d]
    crds.validate(isvc)
    pred = isvc["spec"]["predictor"]
    assert pred["model"]["storageUri"] == "pvc://jobctl-artifacts/models/ensemble"
    assert (pred["minReplicas"], pred["maxReplicas"]) == (2, 5)
    assert pred["model"]["ports"][0]["name"] == "h2c" and pred["serviceAccountName"] == "model-reader"
    assert isvc["metadata"]["name"] == "ensemble" and isvc["metadata"]["namespace"] == "ml"


def test_cli_asks_kserve_for_gpus_of_a_type():
    import yaml

    code, out = deploy("artifacts/models/ensemble", "--format", "kserve", "--dry-run", "--gpus", "2",
                       "--gpu-type", "nvidia-l4", "--gpu-label", "cloud.google.com/gke-accelerator", "--cpu", "4",
                       "--memory", "16Gi")
    assert code == 0, out
    (isvc,) = [d for d in yaml.safe_load_all(out) if d]
    crds.validate(isvc)
    pred = isvc["spec"]["predictor"]
    assert pred["model"]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert pred["model"]["runtimeVersion"] == "2.21.0-gpu"
    assert pred["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pred["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # The default label is the one NVIDIA GPU feature discovery sets, as for training's resources.gpu_type.
    code, out = deploy("artifacts/models/ensemble", "--format", "kserve", "--dry-run", "--gpus", "1",
                       "--gpu-type", "NVIDIA-L4")
    assert code == 0, out
    (isvc,) = [d for d in yaml.safe_load_all(out) if d]
    assert isvc["spec"]["predictor"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    code, out = deploy("artifacts/models/ensemble", "--format", "kserve", "--dry-run", "--gpu-type", "NVIDIA-L4")
    assert code == 2 and "--gpus is 0; expected --gpus >= 1" in " ".join(out.split())


@pytest.mark.parametrize("args, needle", [
    (["--gpus", "1"], "--gpus: applies to --format kserve, not --format deployment; the Deployment's image is TF "
                      "Serving's CPU build"),
    (["--format", "kserve", "--headless"], "--headless: applies to --format deployment, not --format kserve"),
    (["--format", "kserve", "--object-store-secret", "s"], "KServe reads credentials through --service-account"),
    (["--grpc"], "--grpc: applies to --format kserve, not --format deployment"),
    (["--format", "kfserving"], "--format: expected 'deployment' or 'kserve', received 'kfserving'"),
    (["--format", "kserve", "--runtime-version", "latest"], "--runtime-version: expected a tensorflow/serving release"),
])
def test_cli_options_of_the_other_format_are_refused(args, needle):
    code, out = deploy("artifacts/models/ensemble", "--dry-run", *args)
    assert code == 2 and needle in " ".join(out.split())


def test_cli_deploys_updates_and_switches_format_against_the_api(cluster, tmp_path):
    from tests.support.k8s_cluster import write_kubeconfig

    kube = ["--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig", cluster.url), "--context", "fake-ml"]
    code, out = deploy("gs://models-bucket/models/ensemble", "--format", "kserve", "--name", "ensemble", *kube)
    assert code == 0, out
    assert "created InferenceService ml/ensemble" in out
    (isvc,) = cluster.objects("InferenceService")
    crds.validate({k: v for k, v in isvc.items() if k != "status"})
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "gs://models-bucket/models/ensemble"

    code, out = deploy("gs://models-bucket/models/ensemble", "--format", "kserve", "--name", "ensemble",
                       "--replicas", "3", *kube)
    assert code == 0 and "updated InferenceService ml/ensemble" in out
    assert cluster.objects("InferenceService")[0]["spec"]["predictor"]["minReplicas"] == 3
    patch = [r for r in cluster.emulator if str(getattr(r.method, "value", r.method)).upper() == "PATCH"][-1]
    assert patch.headers["Content-Type"] == "application/merge-patch+json"  # custom resources take no strategic merge

    # The same name as a plain Deployment: the InferenceService is pruned, nothing of the old format is left
    code, out = deploy("gs://models-bucket/models/ensemble", "--name", "ensemble", "--replicas", "1", *kube)
    assert code == 0, out
    assert "deleted InferenceService ml/ensemble (no longer part of this deployment)" in out
    assert cluster.objects("InferenceService") == [] and len(cluster.objects("Deployment")) == 1


def test_cli_on_a_cluster_without_kserve_is_one_error(cluster, tmp_path):
    from tests.support.k8s_cluster import write_kubeconfig

    cluster.emulator.unserved_groups.add("serving.kserve.io")
    kube = ["--kubeconfig", write_kubeconfig(tmp_path / "kubeconfig", cluster.url), "--context", "fake-ml"]
    code, out = deploy("artifacts/models/ensemble", "--format", "kserve", *kube)
    text = " ".join(out.split())
    assert code == 1 and text.count("error:") == 1
    assert "the API serving.kserve.io/v1beta1 (inferenceservices) is not served by the cluster" in text
    assert cluster.objects() == []
