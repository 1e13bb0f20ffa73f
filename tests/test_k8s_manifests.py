"""Per-job manifests: schema-valid for Kubernetes 1.29 and the newest schema shipped, secure, and faithful to the spec."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import kubernetes_validate
from jobs import exit_codes
from jobs.spec import SpecError, parse_spec
from k8s import common
from k8s.common import ManifestError
from jobs.contract import ARTIFACTS_CLAIM
from k8s.manifests import (
    SERVICE_ACCOUNT,
    TRAINER_CONTAINER,
    build_job_objects,
    find_job,
    to_yaml_documents,
)

ROOT = Path(__file__).resolve().parents[1]
OLDEST = "1.29"
NEWEST = kubernetes_validate.latest_version()

SPECS = {
    "cpu-one-pod": {"name": "digits-cnn"},
    "gpu-one-node": {
        "name": "cifar-gpus",
        "distribution": {"strategy": "mirrored"},
        "resources": {
            "gpus": 4,
            "cpu": "16",
            "memory": "64Gi",
            "shm_size": "8Gi",
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
            "active_deadline_seconds": 3600,
            "backoff_limit": 2,
        },
        "labels": {"team": "vision"},
    },
    "multi-node": {
        "name": "cifar-dist",
        "distribution": {"strategy": "multi_worker"},
        "resources": {"workers": 4, "gpus": 2, "image": "registry.example/jobctl-train@sha256:" + "a" * 64},
    },
}


def render(key: str, **kwargs) -> list[dict]:
    return build_job_objects(parse_spec(copy.deepcopy(SPECS[key])), run_id="20261121-120000", **kwargs)


def all_rendered() -> list[tuple[str, dict]]:
    out = []
    for key in SPECS:
        for obj in render(key, namespace="ml", extra_labels={common.LABEL_SWEEP: "lr", common.LABEL_TRIAL: "3"}):
            out.append((f"{key}:{obj['kind']}", obj))
    return out


RENDERED = all_rendered()


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
@pytest.mark.parametrize("case", RENDERED, ids=[c[0] for c in RENDERED])
def test_schema_valid(case, version):
    # strict: unknown fields (typos such as readOnlyRootFS) are errors, as they are for `kubectl --validate=strict`.
    kubernetes_validate.validate(case[1], version, strict=True)


def test_schema_validation_can_fail():
    job = copy.deepcopy(find_job(render("cpu-one-pod")))
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, OLDEST, strict=True)


def pod_specs():
    for name, obj in RENDERED:
        if obj["kind"] == "Job":
            yield name, obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("case", list(pod_specs()), ids=[c[0] for c in pod_specs()])
def test_security_policy_on_every_pod(case):
    """The policies a checkov or PSS 'restricted' scan enforces, checked on every rendered pod."""
    _, pod = case
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    writable = set()
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        for key in ("cpu", "memory"):
            assert c["resources"]["requests"][key] and c["resources"]["limits"][key]
        writable |= {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    # With a read-only root, everything the trainer writes must be a volume.
    assert {"/tmp", "/dev/shm", "/artifacts", "/cache"} <= writable
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert not any("hostPath" in v for v in volumes.values())
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"


def test_one_node_job_follows_the_spec():
    objects = render("gpu-one-node")
    assert [o["kind"] for o in objects] == ["ConfigMap", "Job"]
    cm, job = objects
    spec = parse_spec(SPECS["gpu-one-node"])
    js = job["spec"]
    pod = js["template"]["spec"]
    (c,) = pod["containers"]
    assert js["completions"] == js["parallelism"] == 1 and "completionMode" not in js
    assert js["backoffLimit"] == 2 and js["activeDeadlineSeconds"] == 3600 and js["ttlSecondsAfterFinished"] > 0
    assert c["resources"]["limits"] == {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"}
    assert c["resources"]["requests"] == {"cpu": "16", "memory": "64Gi"}
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == "8Gi"
    assert "subdomain" not in pod and not any(e["name"] == "JOBCTL_WORKERS" for e in c["env"])
    # The spec travels in a ConfigMap, mounted read-only, and is exactly the resolved spec.
    assert parse_spec(yaml.safe_load(cm["data"]["spec.yaml"])) == spec
    assert cm["immutable"] is True
    spec_vol = next(v for v in pod["volumes"] if v["name"] == "spec")
    assert spec_vol["configMap"]["name"] == cm["metadata"]["name"]
    assert next(m for m in c["volumeMounts"] if m["name"] == "spec")["readOnly"] is True
    assert c["args"] == [
        "--spec", "/etc/jobctl/spec.yaml", "--artifacts-dir", "/artifacts", "--run-id", "20261121-120000",
    ]
    claim = next(v for v in pod["volumes"] if v["name"] == "artifacts")["persistentVolumeClaim"]["claimName"]
    assert claim == ARTIFACTS_CLAIM
    assert c["imagePullPolicy"] == "Always"  # a tag may move: every pod checks it


def test_multi_node_indexed_job_with_headless_service():
    cm, svc, job = render("multi-node")
    js = job["spec"]
    pod = js["template"]["spec"]
    c = pod["containers"][0]
    assert js["completionMode"] == "Indexed"
    assert js["completions"] == js["parallelism"] == 4
    assert js["podReplacementPolicy"] == "Failed"
    assert js["backoffLimit"] == 3 * 4  # spec default 3 incidents, each fails every worker
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == svc["metadata"]["name"]
    # The Service selects exactly this job's pods.
    assert all(js["template"]["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["JOBCTL_WORKERS"] == "4" and env["JOBCTL_SERVICE"] == svc["metadata"]["name"]
    assert env["JOBCTL_PORT"] == "2222" and env["JOBCTL_JOB_NAME"] == job["metadata"]["name"]
    assert c["ports"] == [{"name": "worker", "containerPort": 2222, "protocol": "TCP"}]
    assert c["imagePullPolicy"] == "IfNotPresent"  # pinned by digest


def test_pod_failure_policy_uses_the_exit_codes():
    rules = find_job(render("multi-node"))["spec"]["podFailurePolicy"]["rules"]
    by_action = {}
    for r in rules:
        by_action.setdefault(r["action"], []).append(r)
    fail = by_action["FailJob"][0]["onExitCodes"]
    assert fail["operator"] == "In" and set(fail["values"]) == {exit_codes.BAD_SPEC, exit_codes.DATA_UNAVAILABLE}
    assert fail["containerName"] == TRAINER_CONTAINER
    assert by_action["Ignore"][0]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert set(by_action["Count"][0]["onExitCodes"]["values"]) == {exit_codes.PREEMPTED, exit_codes.PEER_UNAVAILABLE}
    # Exit codes must not appear in two rules: the first match wins and the others would be dead.
    codes = [v for r in rules if "onExitCodes" in r for v in r["onExitCodes"]["values"]]
    assert len(codes) == len(set(codes))


def test_labels_on_every_object_and_pod():
    objects = render("gpu-one-node", extra_labels={common.LABEL_SWEEP: "lr-sweep", common.LABEL_TRIAL: "7"})
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[common.LABEL_JOB] == "cifar-gpus"
        assert labels[common.LABEL_SWEEP] == "lr-sweep" and labels[common.LABEL_TRIAL] == "7"
        assert labels["app.kubernetes.io/managed-by"] == "jobctl"
        assert labels["app.kubernetes.io/component"] == "training"
        assert labels["team"] == "vision"  # spec.labels
        assert labels["jobctl.io/run-id"] == "20261121-120000"
    job = find_job(objects)
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_pure_and_deterministic():
    assert render("multi-node") == render("multi-node")
    spec = parse_spec(SPECS["multi-node"])
    before = spec.model_dump()
    build_job_objects(spec, run_id="x1")
    assert spec.model_dump() == before


def test_yaml_round_trip():
    objects = render("multi-node")
    assert list(yaml.safe_load_all(to_yaml_documents(objects))) == objects


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "data, needle",
    [
        ({"name": "Cifar_10"}, "name: expected a DNS-1123 label"),
        ({"name": "x", "resources": {"workers": 65}}, "resources.workers: expected less than or equal to 64"),
        ({"name": "x", "resources": {"node_selector": ["gpu"]}}, "resources.node_selector: expected a valid dictionary"),
        ({"name": "x", "resources": {"node_selector": {"gpu": True}}}, "resources.node_selector.gpu: expected a valid string"),
    ],
)
def test_bad_specs_are_rejected_by_the_spec(data, needle):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "data, kwargs, needle",
    [
        (
            {"name": "x", "distribution": {"strategy": "mirrored"}, "resources": {"gpus": 0}},
            {},
            "distribution.strategy 'mirrored' asks for several GPUs in one pod, but resources.gpus=0",
        ),
        (
            {"name": "1st-run", "resources": {"workers": 2}},
            {},
            "name: a multi-worker job needs a headless Service of the same name, and Service names must start "
            "with a letter (DNS-1035); received '1st-run'",
        ),
        ({"name": "x", "resources": {"node_selector": {"bad key!": "v"}}}, {}, "label key 'bad key!' is invalid"),
        ({"name": "x", "resources": {"node_selector": {"pool": "has space"}}}, {}, "has invalid value 'has space'"),
        ({"name": "x"}, {"name": "Not_Valid"}, "name: expected a DNS-1123 label"),
        ({"name": "x"}, {"extra_labels": {"app.kubernetes.io/managed-by": "me"}}, "is set by jobctl to 'jobctl'"),
        ({"name": "x"}, {"run_id": "has spaces"}, "run_id: expected letters, digits"),
        ({"name": "x"}, {"namespace": "ML"}, "namespace: expected a DNS-1123 label"),
    ],
)
def test_kubernetes_problems_are_reported_before_anything_is_built(data, kwargs, needle):
    spec = parse_spec(data)
    with pytest.raises(ManifestError) as info:
        build_job_objects(spec, **{"run_id": "r1", **kwargs})
    assert needle in str(info.value)


def test_every_problem_at_once():
    spec = parse_spec(
        {"name": "9lives", "distribution": {"strategy": "auto"}, "resources": {"workers": 2, "node_selector": {"a b": "c"}}}
    )
    with pytest.raises(ManifestError) as info:
        build_job_objects(spec, run_id="r1")
    text = str(info.value)
    assert "2 problems" in text and "DNS-1035" in text and "label key 'a b'" in text


# --------------------------------------------------------------------------------------- checkov (optional)
def _checkov() -> str | None:
    import os

    return os.environ.get("JOBCTL_CHECKOV") or shutil.which("checkov") or (
        "/tmp/ck/bin/checkov" if Path("/tmp/ck/bin/checkov").exists() else None
    )


# Each exception is justified here and in docs/kubernetes.md.
CHECKOV_SKIPS = {
    # The default image is a version tag of your registry; pin a digest with resources.image: repo@sha256:...
    # (then imagePullPolicy becomes IfNotPresent).
    "CKV_K8S_43": "image digest is the user's choice",
}


@pytest.mark.skipif(_checkov() is None, reason="checkov not installed (it conflicts with the pinned venv; see docs)")
def test_checkov_scan_passes(tmp_path):
    for key in SPECS:
        (tmp_path / f"{key}.yaml").write_text(to_yaml_documents(render(key, namespace="ml-training")))
    kubectl = shutil.which("kubectl")
    if kubectl:  # the base's NetworkPolicy is what satisfies CKV2_K8S_6 for the job pods; the overlay sets a namespace
        base = subprocess.run(
            [kubectl, "kustomize", str(ROOT / "k8s/overlays/example")], capture_output=True, text=True, check=True
        )
        (tmp_path / "base.yaml").write_text(base.stdout)
    skip = ",".join(CHECKOV_SKIPS) + ("" if kubectl else ",CKV2_K8S_6")
    proc = subprocess.run(
        [_checkov(), "-d", str(tmp_path), "--framework", "kubernetes", "--quiet", "--compact", "--skip-download",
         "--skip-check", skip],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.skipif(_checkov() is None, reason="checkov not installed (it conflicts with the pinned venv; see docs)")
def test_checkov_dockerfile_scan_passes():
    proc = subprocess.run(
        [_checkov(), "-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile", "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
