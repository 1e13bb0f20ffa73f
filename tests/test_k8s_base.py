"""The kustomize base and overlays: every kustomization builds, validates, and agrees with the Python side."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import kubernetes_validate
from jobs.contract import ARTIFACTS_CLAIM
from k8s.manifests import SERVICE_ACCOUNT, WORKER_PORT

ROOT = Path(__file__).resolve().parents[1]
KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "k8s").rglob("kustomization.yaml"))
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def build(directory: Path) -> list[dict]:
    proc = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_ships_the_base_and_an_overlay():
    assert {p.relative_to(ROOT).as_posix() for p in KUSTOMIZATIONS} >= {"k8s/base", "k8s/overlays/example",
                                                                       "k8s/overlays/kueue"}


@needs_kubectl
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=[p.relative_to(ROOT).as_posix() for p in KUSTOMIZATIONS])
def test_every_kustomization_builds_and_validates(directory):
    """Built-in kinds against Kubernetes' OpenAPI schemas; custom resources (Kueue's) against their vendored CRDs."""
    from tests.support import crds

    objects = build(directory)
    assert objects
    for obj in objects:
        if not obj["apiVersion"].split("/")[0].endswith(".k8s.io") and "." in obj["apiVersion"].split("/")[0]:
            crds.validate(obj)  # x-k8s.io groups are CRDs (Kueue); *.k8s.io ones are built in
            continue
        for version in ("1.29", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(obj, version, strict=True)


@needs_kubectl
def test_kueue_overlay_admits_what_jobctl_renders():
    """The LocalQueue users name points at the ClusterQueue, whose flavour exists and selects nodes by the label
    jobctl's gpu_type uses; the queue covers every resource a jobctl pod requests (else Kueue never admits it), with
    quota for at least one 4-GPU worker sized by the per-GPU rule."""
    from jobs.spec import parse_spec
    from jobs.spec.cluster import GPU_PRODUCT_LABEL
    from k8s.manifests import build_job_objects, find_job
    from k8s.sizing import cores

    objects = build(ROOT / "k8s/overlays/kueue")
    by_kind = {o["kind"]: o for o in objects if o["apiVersion"].startswith("kueue.x-k8s.io/")}
    assert set(by_kind) == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    local, cq, flavor = by_kind["LocalQueue"], by_kind["ClusterQueue"], by_kind["ResourceFlavor"]
    assert local["metadata"]["namespace"] == "ml-training" and "namespace" not in cq["metadata"]
    assert local["spec"]["clusterQueue"] == cq["metadata"]["name"]
    (group,) = cq["spec"]["resourceGroups"]
    assert [f["name"] for f in group["flavors"]] == [flavor["metadata"]["name"]]
    assert GPU_PRODUCT_LABEL in flavor["spec"]["nodeLabels"]

    spec = parse_spec({"name": "cifar", "resources": {"gpus": 4, "queue": local["metadata"]["name"],
                                                      "gpu_type": flavor["spec"]["nodeLabels"][GPU_PRODUCT_LABEL]}})
    requests = find_job(build_job_objects(spec, run_id="r1"))["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert set(requests) <= set(group["coveredResources"])
    quota = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    assert int(quota["nvidia.com/gpu"]) >= int(requests["nvidia.com/gpu"])
    assert float(quota["cpu"]) >= cores(requests["cpu"])


@needs_kubectl
def test_base_objects_match_what_jobs_reference():
    objects = {(o["kind"], o["metadata"]["name"]): o for o in build(ROOT / "k8s/base")}
    sa = objects[("ServiceAccount", SERVICE_ACCOUNT)]
    assert sa["automountServiceAccountToken"] is False
    pvc = objects[("PersistentVolumeClaim", ARTIFACTS_CLAIM)]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    policy = objects[("NetworkPolicy", "jobctl-training")]
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": WORKER_PORT}]
    binding = objects[("RoleBinding", "jobctl-submitters")]
    assert binding["roleRef"]["name"] == "jobctl-submitter"
    for obj in objects.values():
        assert "namespace" not in obj["metadata"]  # the base is applied with -n or an overlay
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "jobctl"


def _granted(objects: list[dict], role_name: str) -> set[tuple[str, str, str]]:
    """(verb, API group, resource) triples a Role of the built base grants."""
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == role_name)
    return {(v, g, r) for rule in role["rules"] for v in rule["verbs"] for g in rule["apiGroups"] for r in rule["resources"]}


@needs_kubectl
def test_role_grants_every_request_jobctl_makes():
    """Each (verb, group, resource) the client sends must be in the Role, or users meet a 403 mid-submit."""
    from k8s.client import REQUIRED_PERMISSIONS

    granted = _granted(build(ROOT / "k8s/base"), "jobctl-submitter")
    missing = set(REQUIRED_PERMISSIONS) - granted
    assert not missing, f"k8s/base/rbac.yaml lacks {sorted(missing)}"
    # Beyond what jobctl sends, only read-only verbs (kubectl get -w, describe) for the same people.
    extra = {p for p in granted - set(REQUIRED_PERMISSIONS) if p[0] not in ("get", "list", "watch")}
    assert not extra, f"k8s/base/rbac.yaml grants more than jobctl uses: {sorted(extra)}"


@needs_kubectl
def test_deployer_role_grants_what_jobctl_deploy_sends_and_nothing_more():
    from k8s.deploy import DEPLOY_PERMISSIONS

    objects = build(ROOT / "k8s/base")
    granted = _granted(objects, "jobctl-deployer")
    assert not set(DEPLOY_PERMISSIONS) - granted
    assert not {p for p in granted - set(DEPLOY_PERMISSIONS) if p[0] not in ("get", "list", "watch")}
    binding = next(o for o in objects if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "jobctl-deployers")
    assert binding["roleRef"]["name"] == "jobctl-deployer"


def _sent_permissions(requests) -> set[tuple[str, str, str]]:
    """(verb, API group, resource[/subresource]) of each request path the emulator received."""
    from k8s.transport import rbac_verb

    out = set()
    for method, path, _ in requests:
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[parts.index("namespaces") + 2:]
        resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        out.add((rbac_verb(method, name), group, f"{resource}/{sub}" if sub else resource))
    return out


@needs_kubectl
def test_role_grants_what_the_client_sends_for_a_queued_job_and_kueue_read_only():
    """Every request of a queued job's life (submit, status with Workload and position, list, logs, wait, cancel),
    as the emulator received it, is in REQUIRED_PERMISSIONS and granted by jobctl-submitter; the Kueue rules the
    Role gains are read-only and only those two resources."""
    from jobs.spec import parse_spec
    from k8s.client import REQUIRED_PERMISSIONS
    from k8s.manifests import build_job_objects
    from tests.support.k8s_cluster import FakeCluster, make_pod
    from tests.support.kueue_script import KueueScript

    spec = parse_spec({"name": "cifar", "resources": {"gpus": 1, "queue": "team-a"}})
    with FakeCluster(namespace="ml") as cluster:
        client = cluster.client()
        client.submit(build_job_objects(spec, run_id="r1"))
        script = KueueScript(cluster, "cifar")
        script.create_workload()
        cluster.emulator.pending_workloads["team-a"] = [script.workload_name]
        client.status("cifar")
        client.list()
        script.admit()
        (pod,) = script.start_pods(make_pod)
        cluster.set_logs(pod["metadata"]["name"], ["hello"])
        assert [line for _, line in client.logs("cifar")] == ["hello"]
        script.finish()
        client.wait("cifar", timeout=10, on_change=lambda report: None)
        client.delete("cifar")
        sent = _sent_permissions(cluster.requests())
    assert ("list", "kueue.x-k8s.io", "workloads") in sent
    assert ("get", "visibility.kueue.x-k8s.io", "localqueues/pendingworkloads") in sent
    assert sent <= set(REQUIRED_PERMISSIONS), sorted(sent - set(REQUIRED_PERMISSIONS))
    granted = _granted(build(ROOT / "k8s/base"), "jobctl-submitter")
    assert sent <= granted, sorted(sent - granted)
    kueue_grants = {p for p in granted if "kueue" in p[1]}
    assert {p[0] for p in kueue_grants} <= {"get", "list", "watch"}
    assert {(g, r) for _, g, r in kueue_grants} == {("kueue.x-k8s.io", "workloads"),
                                                    ("visibility.kueue.x-k8s.io", "localqueues/pendingworkloads")}
