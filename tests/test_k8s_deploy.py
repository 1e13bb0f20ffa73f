"""`jobctl deploy`: manifests schema-valid, readiness = model AVAILABLE, secure pods, rolling updates without
capacity loss, PVC or object-store models; creation and update against the KMock API server; k8s/serving and
Dockerfile.serve kept in step with the builders. No TensorFlow needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kmock
import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from typer.testing import CliRunner

from k8s import common
from k8s.deploy import apply
from k8s.errors import ApiUnreachableError, ForbiddenError, KubeError
from k8s.serving_manifests import (
    DeployError,
    DeployOptions,
    build_manifests,
    kustomize_files,
)

ROOT = Path(__file__).resolve().parent.parent
NEWEST = kubernetes_validate.latest_version()
CASES = {
    "pvc": DeployOptions("artifacts/models/ensemble"),
    "object-store": DeployOptions("gs://bucket/models/digits", object_store_secret="gcs-creds", replicas=1),
    "everything": DeployOptions("artifacts/models/ensemble", name="prod", namespace="ml", replicas=3, headless=True,
                                hpa_max_replicas=8, version_labels={"stable": 3}, batching=False),
}


def by_kind(objects, kind, name=None):
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''}"
    return found[0]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("version", [NEWEST, "1.29"])
def test_schema_valid(case, version):
    for obj in build_manifests(CASES[case]):
        kubernetes_validate.validate(obj, version, strict=True)


def test_readiness_means_model_available_and_pod_is_hardened():
    objects = build_manifests(CASES["pvc"])
    dep = by_kind(objects, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    # TF Serving answers /v1/models/<name>/metadata with 200 only when a version is loaded (404 before)
    assert c["readinessProbe"]["httpGet"] == {"path": "/v1/models/ensemble/metadata", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v1/models/ensemble/metadata"
    assert c["livenessProbe"]["grpc"] == {"port": 8500} and "--enable_grpc_healthcheck_service=true" in c["args"]
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert c["securityContext"] == common.container_security_context(read_only_root=True)
    assert pod["securityContext"] == common.pod_security_context() and pod["automountServiceAccountToken"] is False
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    # the model comes read-only from the artifacts PVC, mounted where models.config points
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "jobctl-artifacts", "readOnly": True}} in pod["volumes"]
    cfg = by_kind(objects, "ConfigMap")["data"]
    assert 'base_path: "/artifacts/models/ensemble"' in cfg["models.config"]
    assert "--enable_batching=true" in c["args"] and "max_batch_size { value: 32 }" in cfg["batching.config"]
    # the Service selects exactly the Deployment's pods
    svc = by_kind(objects, "Service", "ensemble-serving")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": 8500, "http": 8501}


def test_options_shape_the_objects():
    objects = build_manifests(CASES["everything"])
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [("ConfigMap", "prod-config"), ("Deployment", "prod"), ("Service", "prod"), ("Service", "prod-headless"),
                     ("PodDisruptionBudget", "prod"), ("HorizontalPodAutoscaler", "prod")]
    assert all(o["metadata"]["namespace"] == "ml" for o in objects)
    assert by_kind(objects, "Service", "prod-headless")["spec"]["clusterIP"] == "None"
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
    args = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable_batching=true" not in args and "--allow_version_labels_for_unavailable_models=true" in args
    assert 'version_labels { key: "stable" value: 3 }' in by_kind(objects, "ConfigMap")["data"]["models.config"]

    remote = build_manifests(CASES["object-store"])
    pod = by_kind(remote, "Deployment")["spec"]["template"]["spec"]
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
    # gs://: Google's client reads a key file, so the Secret's key.json is mounted and pointed at
    container = pod["containers"][0]
    assert "envFrom" not in container
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/run/secrets/object-store/key.json"} in container["env"]
    assert {"name": "object-store-key", "mountPath": "/var/run/secrets/object-store", "readOnly": True} in container["volumeMounts"]
    assert {"name": "object-store-key", "secret": {"secretName": "gcs-creds", "items": [{"key": "key.json", "path": "key.json"}]}} in pod["volumes"]
    # s3://: the stock image cannot read it (serving#1963); copied in, credentials only in the copiers (test below)
    s3 = by_kind(build_manifests(DeployOptions("s3://bucket/models/digits", object_store_secret="aws-creds")), "Deployment")
    assert "envFrom" not in s3["spec"]["template"]["spec"]["containers"][0]
    assert 'base_path: "gs://bucket/models/digits"' in by_kind(remote, "ConfigMap")["data"]["models.config"]
    assert not any(o["kind"] == "PodDisruptionBudget" for o in remote)  # one replica: a PDB would block drains


def test_models_config_is_a_valid_tf_serving_config():
    from tensorflow_serving.config import model_server_config_pb2

    for opts in CASES.values():
        text = by_kind(build_manifests(opts), "ConfigMap")["data"]["models.config"]
        cfg = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        (model,) = cfg.model_config_list.config
        assert model.name and model.base_path and model.model_version_policy.latest.num_versions == 1
    baked = (ROOT / "serving" / "config" / "models.config").read_text()
    assert text_format.Parse(baked, model_server_config_pb2.ModelServerConfig()).model_config_list.config[0].name == "ensemble"


@pytest.mark.parametrize(
    "opts, needle",
    [
        (DeployOptions("/data/models/x"), "is not under --artifacts-dir 'artifacts'"),
        (DeployOptions("ftp://host/models/x"), "expected a path under --artifacts-dir or a gs:// or s3:// URI"),
        (DeployOptions("artifacts/models/x", cpu="lots"), "--cpu: expected a Kubernetes quantity"),
        (DeployOptions("artifacts/models/x", cpu="-1"), "--cpu: expected a quantity above zero"),
        (DeployOptions("artifacts/models/x", memory="0"), "--memory: expected a quantity above zero"),
        (DeployOptions("artifacts/models/x", image="bad image"), "--image: expected an image reference"),
        (DeployOptions("artifacts/models/x", image=""), "--image: expected an image reference"),
        (DeployOptions("artifacts/models/x", replicas=3, hpa_max_replicas=2), "--hpa-max: expected >= --replicas (3)"),
        (DeployOptions("artifacts/models/x", name="Bad_Name"), "--name: expected a DNS-1123 label"),
        (DeployOptions("artifacts/models/x", object_store_secret="s"), "applies to gs:// or s3://"),
    ],
)
def test_bad_options_are_named(opts, needle):
    with pytest.raises((DeployError, common.ManifestError)) as info:
        build_manifests(opts)
    assert needle in str(info.value)


@pytest.fixture()
def cluster():
    from tests.support.k8s_cluster import FakeCluster

    c = FakeCluster(namespace="ml")
    for group, version, plural in [("apps", "v1", "deployments"), ("policy", "v1", "poddisruptionbudgets"),
                                   ("autoscaling", "v2", "horizontalpodautoscalers")]:
        c.emulator.resources[kmock.resource(group, version, plural)] = {}
    with c:
        yield c


def test_apply_creates_then_updates_through_the_api(cluster):
    opts = DeployOptions("artifacts/models/ensemble", namespace="ml", headless=True, hpa_max_replicas=4)
    lines = apply(build_manifests(opts), api_client=cluster.api_client())
    assert lines[0] == "created ConfigMap ml/ensemble-serving-config" and all(l.startswith("created") for l in lines)
    stored = {(o["kind"], o["metadata"]["name"]): o for o in cluster.objects()}
    assert set(stored) == {("ConfigMap", "ensemble-serving-config"), ("Deployment", "ensemble-serving"),
                           ("Service", "ensemble-serving"), ("Service", "ensemble-serving-headless"),
                           ("PodDisruptionBudget", "ensemble-serving"), ("HorizontalPodAutoscaler", "ensemble-serving")}
    assert stored[("Deployment", "ensemble-serving")]["spec"]["replicas"] == 2

    opts.replicas = 3  # deploying again rolls out the change instead of failing on 409
    lines = apply(build_manifests(opts), api_client=cluster.api_client())
    assert all(l.startswith("updated") for l in lines)
    dep = next(o for o in cluster.objects() if o.get("kind") == "Deployment")
    assert dep["spec"]["replicas"] == 3

    # Deploying again without the HPA and the headless Service removes them: a leftover HPA would scale the
    # Deployment back up. Objects of another deployment in the namespace are not touched.
    other = DeployOptions("artifacts/models/other", namespace="ml", hpa_max_replicas=3)
    apply(build_manifests(other), api_client=cluster.api_client())
    opts.hpa_max_replicas, opts.headless, opts.replicas = None, False, 1
    lines = apply(build_manifests(opts), api_client=cluster.api_client())
    assert "deleted HorizontalPodAutoscaler ml/ensemble-serving (no longer part of this deployment)" in lines
    assert "deleted Service ml/ensemble-serving-headless (no longer part of this deployment)" in lines
    names = {(o["kind"], o["metadata"]["name"]) for o in cluster.objects()}
    assert ("HorizontalPodAutoscaler", "ensemble-serving") not in names
    assert ("Service", "ensemble-serving-headless") not in names
    assert ("HorizontalPodAutoscaler", "other-serving") in names and ("Deployment", "ensemble-serving") in names


def test_apply_reports_api_errors(cluster):
    """A 403 reads as one for `submit` does (one transport): the missing RBAC rule and the Role that grants it."""
    cluster.emulator.failures[("create", "configmaps")] = (403, "Forbidden", 'configmaps is forbidden: User "alice"')
    with pytest.raises(ForbiddenError) as info:
        apply(build_manifests(DeployOptions("artifacts/models/ensemble", namespace="ml")), api_client=cluster.api_client())
    message = str(info.value)
    assert message.startswith('forbidden: user "alice" cannot create "configmaps" (API group "") in namespace "ml"')
    assert 'The RBAC rule missing: {apiGroups: [""], resources: ["configmaps"], verbs: ["create"]}' in message
    assert "The Role jobctl-deployer in k8s/base/rbac.yaml" in message and '"kind"' not in message
    assert info.value.exit_code == 1


def test_a_failed_deploy_removes_what_it_created(cluster):
    cluster.emulator.failures[("create", "services")] = (500, "InternalError", "etcdserver: request timed out")
    with pytest.raises(KubeError) as info:
        apply(build_manifests(DeployOptions("artifacts/models/ensemble", namespace="ml")), api_client=cluster.api_client())
    assert ("create Service 'ensemble-serving' in namespace 'ml': etcdserver: request timed out (HTTP 500 InternalError)"
            in str(info.value))
    assert "rolled back what this deploy had created: Deployment ensemble-serving, ConfigMap ensemble-serving-config" in str(info.value)
    assert not [o for o in cluster.objects() if o.get("kind") in ("ConfigMap", "Deployment")]


def test_an_unreachable_api_server_is_one_clear_error():
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:1"
    cfg.retries = 0
    with pytest.raises(ApiUnreachableError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:1 \(connection refused\)"):
        apply(build_manifests(DeployOptions("artifacts/models/ensemble", namespace="ml")), api_client=client.ApiClient(cfg))


def test_deploy_errors_exit_the_same_everywhere():
    """DeployError (options no deployment can have) is a bad input wherever it is raised; cluster errors exit 1."""
    from jobs import exit_codes

    assert DeployError("x").exit_code == exit_codes.BAD_SPEC and isinstance(DeployError("x"), ValueError)
    assert KubeError("x").exit_code == exit_codes.FAILURE


def test_cli_deploy_uses_the_kubeconfig_context_and_its_namespace(cluster, tmp_path):
    from cli.main import app
    from tests.support.k8s_cluster import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    r = CliRunner().invoke(app, ["deploy", "artifacts/models/ensemble", "--kubeconfig", str(kubeconfig), "--context", "fake-ml"])
    assert r.exit_code == 0, r.output
    assert "created Deployment ml/ensemble-serving" in r.output
    r = CliRunner().invoke(app, ["deploy", "artifacts/models/ensemble", "--kubeconfig", str(tmp_path / "none")])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_cli_deploy_dry_run_and_output_dir(tmp_path):
    from cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["deploy", "artifacts/models/digits", "--dry-run", "--replicas", "3", "--headless"])
    assert r.exit_code == 0, r.output
    docs = [d for d in yaml.safe_load_all(r.output) if d]
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service", "Service", "PodDisruptionBudget"]
    assert docs[1]["spec"]["replicas"] == 3 and docs[1]["metadata"]["name"] == "digits-serving"
    r = runner.invoke(app, ["deploy", "artifacts/models/digits", "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir())[0] == "00-configmap-digits-serving-config.yaml"
    r = runner.invoke(app, ["deploy", "/elsewhere/models/x", "--dry-run"])
    assert r.exit_code == 2 and "not under --artifacts-dir" in r.output


def test_committed_kustomize_directory_matches_the_builders():
    committed = {p.name: p.read_text() for p in (ROOT / "k8s" / "serving").glob("*.yaml")}
    assert committed == kustomize_files(), "k8s/serving is stale: run `python -m k8s.serving_manifests k8s/serving`"
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "serving")], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for doc in yaml.safe_load_all(out.stdout):
            kubernetes_validate.validate(doc, NEWEST, strict=True)


def test_dockerfile_serve_lints_clean_and_uses_the_config():
    text = (ROOT / "Dockerfile.serve").read_text()
    assert "FROM tensorflow/serving:2.21.0" in text and "USER 10001:10001" in text
    for f in ("models.config", "batching.config", "monitoring.config"):
        assert f"serving/config/{f}" in text and f"/etc/jobctl-serving/{f}" in text
        assert (ROOT / "serving" / "config" / f).is_file()
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile.serve")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("image, policy", [
    ("ghcr.io/org/jobctl-serve:1.2.0", "Always"),  # a tag may move: every replica checks the registry
    ("ghcr.io/org/jobctl-serve:latest", "Always"),
    ("ghcr.io/org/jobctl-serve@sha256:" + "a" * 64, "IfNotPresent"),  # a digest never changes
])
def test_serving_and_training_pods_share_one_image_pull_policy(image, policy):
    from jobs.spec import parse_spec
    from k8s.manifests import build_job_objects, find_job

    serving = by_kind(build_manifests(DeployOptions("artifacts/models/ensemble", image=image)), "Deployment")
    training = find_job(build_job_objects(parse_spec({"name": "digits"}), image=image, run_id="r1"))
    for obj in (serving, training):
        assert obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == policy


# ------------------------------------------------------------------------------------------------- s3 copied in
S3 = DeployOptions("s3://models-bucket/models/ensemble", object_store_secret="aws-creds", num_versions=2,
                   version_labels={"stable": 3}, replicas=1)


@pytest.mark.parametrize("version", [NEWEST, "1.29"])
def test_s3_deployment_is_schema_valid(version):
    for obj in build_manifests(S3):
        kubernetes_validate.validate(obj, version, strict=True)


def test_s3_model_is_copied_in_and_tf_serving_never_sees_the_credentials():
    objects = build_manifests(S3)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    (copy,) = pod["initContainers"]
    tfserving, sync = pod["containers"]
    assert (copy["name"], tfserving["name"], sync["name"]) == ("model-copy", "tfserving", "model-sync")
    # TF Serving reads the local copy, read-only, and holds no credential of any kind
    assert 'base_path: "/models/ensemble"' in by_kind(objects, "ConfigMap")["data"]["models.config"]
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in tfserving["volumeMounts"]
    assert "envFrom" not in tfserving and not any(e["name"].startswith("AWS_") for e in tfserving.get("env", []))
    # the copiers get the Secret by reference only, and keep what the version policy serves
    for c in (copy, sync):
        assert c["envFrom"] == [{"secretRef": {"name": "aws-creds"}}]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["SRC"] == "s3://models-bucket/models/ensemble" and env["DST"] == "/models/ensemble"
        assert (env["KEEP_LATEST"], env["KEEP_VERSIONS"], env["POLL_SECONDS"]) == ("2", "3", "30")
        assert c["securityContext"] == common.container_security_context(read_only_root=True)
    text = yaml.safe_dump_all(objects)
    assert "aws-creds" in text and "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text


def test_s3_copy_image_is_checked():
    bad = DeployOptions("s3://models-bucket/models/ensemble", s3_copy_image="not an image")
    with pytest.raises(common.ManifestError, match="--s3-copy-image: expected an image reference"):
        build_manifests(bad)
