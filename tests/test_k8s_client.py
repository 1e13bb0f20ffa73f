"""JobClient against a Kubernetes API over HTTP (KMock, see tests/support/k8s_cluster.py), through the official client."""

from __future__ import annotations

import copy
import socket
import threading
import time

import pytest

from jobs.spec import parse_spec
from k8s import common
from k8s.client import (
    ApiUnreachableError,
    ConflictError,
    ForbiddenError,
    JobClient,
    KubeError,
    NotFoundError,
    RollbackError,
)
from k8s.manifests import build_job_objects
from bench.common import free_port
from tests.support.k8s_cluster import make_pod

SERVER_FIELDS = ("uid", "creationTimestamp", "resourceVersion", "ownerReferences")


def rendered(name="cifar", workers=1, **kw):
    spec = parse_spec({"name": name, "resources": {"workers": workers, "gpus": 1}})
    return build_job_objects(spec, run_id="20261121-120000", namespace="ml", **kw)


def strip_server_fields(obj: dict) -> dict:
    obj = copy.deepcopy(obj)
    for key in SERVER_FIELDS:
        obj["metadata"].pop(key, None)
    if obj["kind"] == "Job":  # the API server's defaults, and the suspend jobctl sets and clears
        obj["spec"].pop("selector", None)
        obj["spec"].pop("suspend", None)
        labels = obj["spec"]["template"]["metadata"]["labels"]
        for key in ("batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name"):
            labels.pop(key, None)
    return obj


# ------------------------------------------------------------------------------------------------ submit
@pytest.mark.parametrize("workers", [1, 3])
def test_submit_creates_exactly_the_rendered_objects(cluster, workers):
    objects = rendered(workers=workers)
    created = cluster.client().submit(objects)
    stored = {(o["kind"], o["metadata"]["name"]): o for o in cluster.objects()}
    assert set(stored) == {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        assert strip_server_fields(stored[(obj["kind"], obj["metadata"]["name"])]) == obj
    job = stored[("Job", "cifar")]
    assert job["spec"]["suspend"] is False  # resumed once its ConfigMap (and Service) existed
    assert [c["kind"] for c in created] == [o["kind"] for o in objects if o["kind"] == "Job"] + [
        o["kind"] for o in objects if o["kind"] != "Job"
    ]


def test_job_is_created_suspended_and_resumed_after_its_dependents(cluster):
    cluster.client().submit(rendered(workers=2))
    calls = [(m, p.rsplit("/", 1)[-1]) for m, p, _ in cluster.requests()]
    assert calls == [("POST", "jobs"), ("POST", "configmaps"), ("POST", "services"), ("PATCH", "cifar")]
    first_job = next(r for r in cluster.emulator if getattr(r.method, "value", r.method).upper() == "POST")
    assert first_job.data["spec"]["suspend"] is True


def test_deleting_the_job_removes_configmap_and_service(cluster):
    """Owner references point at the created Job's uid, so the garbage collector removes the rest."""
    cluster.client().submit(rendered(workers=2))
    job_uid = cluster.objects("Job")[0]["metadata"]["uid"]
    for kind in ("ConfigMap", "Service"):
        (obj,) = cluster.objects(kind)
        assert obj["metadata"]["ownerReferences"] == [
            {"apiVersion": "batch/v1", "kind": "Job", "name": "cifar", "uid": job_uid}
        ]
    cluster.client().request("DELETE", "Job", "cifar")
    assert cluster.objects() == []


def test_name_taken_is_a_clear_error_and_changes_nothing(cluster):
    client = cluster.client()
    client.submit(rendered())
    before = cluster.objects()
    with pytest.raises(ConflictError) as info:
        client.submit(rendered())
    text = str(info.value)
    assert "a Job named 'cifar' already exists in namespace 'ml'" in text and "--replace" in text
    assert cluster.objects() == before


def test_replace_deletes_the_old_job_first(cluster):
    client = cluster.client()
    client.submit(rendered())
    old_uid = cluster.objects("Job")[0]["metadata"]["uid"]
    client.submit(rendered(), replace=True)
    (job,) = cluster.objects("Job")
    assert job["metadata"]["uid"] != old_uid
    assert len(cluster.objects("ConfigMap")) == 1
    delete = next(r for r in cluster.emulator if getattr(r.method, "value", r.method).upper() == "DELETE")
    assert delete.data["propagationPolicy"] == "Foreground"


def test_forbidden_names_verb_resource_and_rule_and_rolls_back(cluster):
    cluster.emulator.forbidden.add(("create", "services"))
    with pytest.raises(ForbiddenError) as info:
        cluster.client().submit(rendered(workers=2))
    text = str(info.value)
    assert 'user "alice@example.com" cannot create "services" (API group "") in namespace "ml"' in text
    assert 'The RBAC rule missing: {apiGroups: [""], resources: ["services"], verbs: ["create"]}' in text
    assert "k8s/base/rbac.yaml" in text
    assert cluster.objects() == []  # the Job and ConfigMap created before the failure are gone


def test_forbidden_on_pod_logs_names_the_subresource(cluster):
    client = cluster.client()
    client.submit(rendered())
    job = cluster.objects("Job")[0]
    pod = make_pod(job, 0, phase="Running", state={"running": {}})
    cluster.put("Pod", pod)
    cluster.emulator.forbidden.add(("get", "pods/log"))
    with pytest.raises(ForbiddenError, match=r'cannot get "pods/log" \(API group ""\)'):
        list(client.logs("cifar"))


def test_failed_create_leaves_nothing_behind(cluster):
    cluster.emulator.failures[("create", "configmaps")] = (500, "InternalError", "etcdserver: request timed out")
    with pytest.raises(KubeError, match="etcdserver: request timed out"):
        cluster.client().submit(rendered(workers=2))
    assert cluster.objects() == []
    deletes = [p for m, p, _ in cluster.requests() if m == "DELETE"]
    assert deletes == ["/apis/batch/v1/namespaces/ml/jobs/cifar"]


def test_failed_rollback_lists_what_is_left(cluster):
    cluster.emulator.failures[("create", "services")] = (500, "InternalError", "boom")
    cluster.emulator.forbidden.add(("delete", "jobs"))
    with pytest.raises(RollbackError) as info:
        cluster.client().submit(rendered(workers=2))
    assert info.value.left_behind == ["job/cifar"]
    assert "kubectl delete job/cifar -n ml" in str(info.value)


def test_dry_run_checks_on_the_server_and_stores_nothing(cluster):
    created = cluster.client().submit(rendered(workers=2), dry_run=True)
    assert [c["kind"] for c in created] == ["Job", "ConfigMap", "Service"]
    assert cluster.objects() == []
    assert all(q.get("dryRun") == "All" for m, _, q in cluster.requests() if m == "POST")


# ------------------------------------------------------------------------------------------------ status
def submitted_job(cluster, workers=1) -> dict:
    cluster.client().submit(rendered(workers=workers))
    return cluster.objects("Job")[0]


POD_CASES = {
    "no-gpu-node": dict(
        phase="Pending", node=None,
        conditions=[{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu. preemption: 0/4 nodes are available.",
        }],
    ),
    "bad-image": dict(
        phase="Pending",
        state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x/jobctl-train:0.1.0"'}},
    ),
    "oom": dict(phase="Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
    "bad-spec": dict(
        phase="Failed",
        state={"terminated": {"exitCode": 2, "reason": "Error", "message": "spec: 1 problem\n  - training.epochs: expected >= 1"}},
    ),
    "running": dict(phase="Running", state={"running": {"startedAt": "2026-11-21T12:00:00Z"}}),
}


@pytest.mark.parametrize(
    "case, state, needles",
    [
        ("no-gpu-node", "Unschedulable", ["no node has 1 free GPUs", "Scheduler: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu"]),
        ("bad-image", "ImagePullBackOff", ["image ghcr.io/your-org/jobctl-train", "cannot be pulled", "Back-off pulling image"]),
        ("oom", "OOMKilled", ["more than its memory limit (16Gi)", "raise resources.memory"]),  # 1 GPU: 16Gi per GPU
        ("bad-spec", "Failed", ["exit code 2 (invalid spec or arguments (not retried))", "training.epochs: expected >= 1"]),
        ("running", "Running", []),
    ],
)
def test_status_explains_each_pod_state(cluster, case, state, needles):
    job = submitted_job(cluster)
    cluster.put("Pod", make_pod(job, 0, **POD_CASES[case]))
    report = cluster.client().status("cifar")
    (pod,) = report.pods
    assert pod.state == state
    for needle in needles:
        assert needle in pod.detail
    if case == "bad-spec":
        assert pod.exit_code == 2


def test_status_of_a_multi_worker_job_lists_every_worker(cluster):
    job = submitted_job(cluster, workers=3)
    for i in range(3):
        cluster.put("Pod", make_pod(job, i, suffix=f"p{i}", phase="Running", state={"running": {}}, node=f"node-{i}", restarts=i))
    cluster.patch("Job", "cifar", {"status": {"active": 3}})
    report = cluster.client().status("cifar")
    assert report.state == "Running" and report.workers == 3
    assert [(p.index, p.node, p.restarts) for p in report.pods] == [(0, "node-0", 0), (1, "node-1", 1), (2, "node-2", 2)]


def test_status_reports_job_conditions(cluster):
    submitted_job(cluster)
    cluster.patch("Job", "cifar", {"status": {"failed": 1, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy", "message": "Container trainer for pod ml/cifar-0-x failed with exit code 2 matching FailJob rule at index 0"},
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "Container trainer for pod ml/cifar-0-x failed with exit code 2 matching FailJob rule at index 0"},
    ]}})
    report = cluster.client().status("cifar")
    assert report.state == "Failed"
    assert report.message.startswith("PodFailurePolicy: Container trainer")
    assert {c["type"] for c in report.conditions} == {"FailureTarget", "Failed"}


def test_status_of_a_missing_job(cluster):
    with pytest.raises(NotFoundError, match="Job 'nope' not found in namespace 'ml'"):
        cluster.client().status("nope")


# -------------------------------------------------------------------------------------------- list & cancel
def test_list_filters_by_label_and_sweep(cluster):
    client = cluster.client()
    client.submit(rendered("trial-1", extra_labels={common.LABEL_SWEEP: "lr", common.LABEL_TRIAL: "1"}))
    client.submit(rendered("trial-2", extra_labels={common.LABEL_SWEEP: "lr", common.LABEL_TRIAL: "2"}))
    client.submit(rendered("other"))
    cluster.put("Job", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "not-ours", "labels": {}}, "spec": {}})
    assert {r.name for r in client.list()} == {"trial-1", "trial-2", "other"}
    assert {r.name for r in client.list({common.LABEL_SWEEP: "lr"})} == {"trial-1", "trial-2"}
    assert {r.name for r in client.list(f"{common.LABEL_TRIAL}=2")} == {"trial-2"}


def test_cancel_deletes_in_the_foreground(cluster):
    client = cluster.client()
    client.submit(rendered(workers=2))
    client.delete("cifar")
    assert cluster.objects() == []
    delete = next(r for r in cluster.emulator if getattr(r.method, "value", r.method).upper() == "DELETE")
    assert delete.url.path == "/apis/batch/v1/namespaces/ml/jobs/cifar"
    assert delete.data["propagationPolicy"] == "Foreground"
    with pytest.raises(NotFoundError):
        client.delete("cifar")


def test_cancel_also_removes_kubectl_applied_leftovers(cluster):
    """Objects applied from `jobctl render` have no owner references: cancel removes them by label."""
    for obj in rendered(workers=2):
        cluster.put(obj["kind"], obj)
    cluster.put("ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}})
    cluster.client().delete("cifar")
    assert cluster.names() == {("ConfigMap", "unrelated")}


# ---------------------------------------------------------------------------------------------------- logs
def test_logs_of_the_chief(cluster):
    job = submitted_job(cluster)
    pod = make_pod(job, 0, phase="Running", state={"running": {}})
    cluster.put("Pod", pod)
    cluster.set_logs(pod["metadata"]["name"], ["epoch 1/2", "epoch 2/2"])
    assert list(cluster.client().logs("cifar")) == [(0, "epoch 1/2"), (0, "epoch 2/2")]
    assert list(cluster.client().logs("cifar", tail_lines=1)) == [(0, "epoch 2/2")]


def test_logs_of_a_pending_pod_say_why(cluster):
    job = submitted_job(cluster)
    cluster.put("Pod", make_pod(job, 0, **POD_CASES["no-gpu-node"]))
    ((index, line),) = list(cluster.client().logs("cifar"))
    assert "has not started: Unschedulable" in line and "Insufficient nvidia.com/gpu" in line


def test_follow_streams_and_continues_after_a_retry(cluster):
    job = submitted_job(cluster)
    first = make_pod(job, 0, suffix="aaaaa", phase="Running", state={"running": {}}, created="2026-11-21T12:00:00Z")
    cluster.put("Pod", first)
    cluster.set_logs("cifar-0-aaaaa", ["epoch 1/3", "preempted: saving state"], delay=0.05)
    cluster.set_logs("cifar-0-bbbbb", ["resumed at epoch 2", "epoch 3/3", "done"], delay=0.05)

    def retry_then_finish():
        deadline = time.monotonic() + 10
        while not any(p.endswith("/pods/cifar-0-aaaaa/log") for _, p, _ in cluster.requests()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        time.sleep(0.3)  # the first pod's stream has ended: the Job controller replaces the pod
        cluster.put("Pod", dict(first, status={"phase": "Failed"}))
        cluster.put("Pod", make_pod(job, 0, suffix="bbbbb", phase="Running", state={"running": {}}, created="2026-11-21T12:05:00Z"))
        time.sleep(0.5)
        cluster.patch("Job", "cifar", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})

    threading.Thread(target=retry_then_finish, daemon=True).start()
    started = time.monotonic()
    lines = [line for _, line in cluster.client().logs("cifar", follow=True)]
    assert lines == [
        "epoch 1/3", "preempted: saving state",
        "--- worker 0: pod cifar-0-bbbbb (retry 1) ---",
        "resumed at epoch 2", "epoch 3/3", "done",
    ]
    assert time.monotonic() - started < 10


def test_follow_all_workers(cluster):
    job = submitted_job(cluster, workers=2)
    for i in range(2):
        pod = make_pod(job, i, suffix=f"w{i}", phase="Succeeded", state={"terminated": {"exitCode": 0}})
        cluster.put("Pod", pod)
        cluster.set_logs(pod["metadata"]["name"], [f"worker {i} line {n}" for n in range(3)])
    cluster.patch("Job", "cifar", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    got = list(cluster.client().logs("cifar", follow=True, workers=[0, 1]))
    for i in range(2):
        assert [line for idx, line in got if idx == i] == [f"worker {i} line {n}" for n in range(3)]
    with pytest.raises(KubeError, match="--worker 5: job 'cifar' has workers 0..1"):
        list(cluster.client().logs("cifar", workers=[5]))


# ---------------------------------------------------------------------------------------------------- wait
def test_wait_returns_the_outcome(cluster):
    submitted_job(cluster)
    states = []

    def finish():
        time.sleep(0.2)
        cluster.patch("Job", "cifar", {"status": {"active": 1}})
        time.sleep(0.2)
        cluster.patch("Job", "cifar", {"status": {"active": 0, "succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}})

    threading.Thread(target=finish, daemon=True).start()
    report = cluster.client().wait("cifar", timeout=10, on_change=lambda r: states.append(r.state))
    assert report.state == "Succeeded"
    assert states[-1] == "Succeeded" and states == sorted(states, key=["Pending", "Running", "Succeeded"].index)
    cluster.client().submit(rendered("slow"))
    with pytest.raises(KubeError, match="job 'slow' still Pending after 0.1s"):
        cluster.client().wait("slow", timeout=0.1)


# ----------------------------------------------------------------------------------------------- unreachable
def _client_for(port: int, **kw) -> JobClient:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.retries = 1
    return JobClient("ml", api_client=client.ApiClient(cfg), **kw)


def test_api_refusing_connections_is_a_clear_error_at_once():
    port = free_port()  # closed again: nothing listens there
    started = time.monotonic()
    with pytest.raises(ApiUnreachableError) as info:
        _client_for(port).list()
    assert time.monotonic() - started < 5
    assert f"cannot reach the Kubernetes API at http://127.0.0.1:{port} (connection refused)" in str(info.value)


def test_api_that_never_answers_times_out_in_bounded_time():
    with socket.socket() as s:  # accepts connections (backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        started = time.monotonic()
        with pytest.raises(ApiUnreachableError) as info:
            _client_for(s.getsockname()[1], connect_timeout=0.5, read_timeout=0.5).status("x")
        elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed  # one retry: about 2 x read timeout
    assert "timed out" in str(info.value) and "--context" in str(info.value)
