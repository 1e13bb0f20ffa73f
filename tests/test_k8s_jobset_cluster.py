"""The JobSet backend end to end: `jobctl render / submit / status / logs / list / cancel` through the official
client against KMock, scripted with what the JobSet and Job controllers write (tests/support/jobset_controller.py);
and a cluster without the JobSet API."""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from jobs import exit_codes
from k8s import jobset
from tests.support import crds
from tests.support.jobset_controller import condition, create_children, delete_children, set_status, stored_jobset
from tests.support.k8s_cluster import FakeCluster, make_pod, write_kubeconfig

runner = CliRunner()
SPEC = {"name": "cifar", "distribution": {"backend": "jobset"}, "resources": {"workers": 2, "gpus": 4, "backoff_limit": 3}}


@pytest.fixture()
def env(tmp_path):
    with FakeCluster(namespace="ml") as cluster:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
        spec = tmp_path / "job.yaml"
        spec.write_text(yaml.safe_dump(SPEC))
        yield cluster, ["--kubeconfig", str(kubeconfig), "--context", "fake-ml"], spec


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def status(kube, name="cifar") -> dict:
    code, out = invoke("status", name, *kube, "--json")
    assert code == 0, out
    return json.loads(out)


def test_render_writes_the_configmap_and_a_valid_jobset(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    code, out = invoke("render", spec, "-o", tmp_path / "out", "--run-id", "r1", "-n", "ml")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00-configmap-cifar-spec.yaml", "01-jobset-cifar.yaml"]
    crds.validate(yaml.safe_load((tmp_path / "out" / "01-jobset-cifar.yaml").read_text()))


def test_a_jobset_submit_runs_end_to_end_with_status_right_at_each_step(env):
    cluster, kube, spec = env
    code, out = invoke("submit", spec, *kube)
    assert code == 0, out
    assert "created jobset/cifar in namespace ml" in out and "created configmap/cifar-spec" in out
    js = stored_jobset(cluster, "cifar")
    assert js["spec"].get("suspend") is False  # resumed once its ConfigMap existed
    (cm,) = cluster.objects("ConfigMap")
    assert cm["metadata"]["ownerReferences"] == [
        {"apiVersion": jobset.API_VERSION, "kind": "JobSet", "name": "cifar", "uid": js["metadata"]["uid"]}]
    assert cluster.objects("Service") == []  # JobSet makes its own headless Service
    # 1. created, the controller has not acted yet
    report = status(kube)
    assert (report["kind"], report["state"], report["workers"], report["pods"]) == ("JobSet", "Pending", 2, [])
    code, out = invoke("status", "cifar", *kube)
    assert code == 0 and "jobset cifar in ml: Pending  workers 2" in out

    # 2. the controller creates the child Job; its pods are being created
    job, pods = create_children(cluster, "cifar", phase="Pending",
                                state={"waiting": {"reason": "ContainerCreating"}})
    report = status(kube)
    assert report["state"] == "Pending"
    assert [(p["index"], p["state"]) for p in report["pods"]] == [(0, "ContainerCreating"), (1, "ContainerCreating")]

    # 3. running: both workers up, logs by worker
    delete_children(cluster, job, pods)
    job, pods = create_children(cluster, "cifar")
    set_status(cluster, "cifar", restarts=0, replicatedJobsStatus=[{"name": "worker", "active": 1, "ready": 1}])
    for i, pod in enumerate(pods):
        cluster.set_logs(pod["metadata"]["name"], [f"worker {i}: epoch 1/10"])
    report = status(kube)
    assert report["state"] == "Running" and (report["active"], report["failed"]) == (2, 0)
    code, out = invoke("logs", "cifar", *kube, "--all")
    assert code == 0 and "[worker 0] worker 0: epoch 1/10" in out and "[worker 1] worker 1: epoch 1/10" in out

    # 4. worker 1 dies: the child Job fails, JobSet recreates the whole group (restart 1 of at most 3)
    failed = make_pod(job, 1, suffix="r0x1", phase="Failed",
                      state={"terminated": {"exitCode": 76, "reason": "Error"}})
    failed["metadata"]["annotations"] = pods[1]["metadata"]["annotations"]
    cluster.put("Pod", failed)
    report = status(kube)
    assert [p["state"] for p in report["pods"]] == ["Running", "Failed"]
    assert "exit code 76" in report["pods"][1]["detail"]
    delete_children(cluster, job, pods)
    job, pods = create_children(cluster, "cifar", restart=1)
    set_status(cluster, "cifar", restarts=1, replicatedJobsStatus=[{"name": "worker", "active": 1, "ready": 1}])
    report = status(kube)
    assert report["state"] == "Running" and report["message"] == "group restart 1 of at most 3"
    assert [p["name"] for p in report["pods"]] == ["cifar-worker-0-0-r1x0", "cifar-worker-0-1-r1x1"]

    # 5. list shows the JobSet once (not its child Job)
    code, out = invoke("list", *kube, "--json")
    assert code == 0 and [(j["name"], j["workers"]) for j in json.loads(out)] == [("cifar", 2)]

    # 6. finished
    for i, pod in enumerate(pods):
        done = make_pod(job, i, suffix=f"r1x{i}", phase="Succeeded", state={"terminated": {"exitCode": 0}})
        done["metadata"]["annotations"] = pod["metadata"]["annotations"]
        cluster.put("Pod", done)
    set_status(cluster, "cifar", restarts=1, terminalState="Completed",
               conditions=[condition("Completed", "AllJobsCompleted", "jobset completed successfully")],
               replicatedJobsStatus=[{"name": "worker", "succeeded": 1}])
    report = status(kube)
    assert report["state"] == "Succeeded" and report["succeeded"] == 2
    assert report["message"] == "AllJobsCompleted: jobset completed successfully"

    # 7. cancel removes the JobSet; its ConfigMap goes with it (owner reference)
    code, out = invoke("cancel", "cifar", *kube)
    assert code == 0 and "deleted jobset/cifar in namespace ml" in out
    assert cluster.objects("JobSet") == [] and cluster.objects("ConfigMap") == []
    delete = [r for r in cluster.emulator if str(getattr(r.method, "value", r.method)).upper() == "DELETE"][0]
    assert delete.url.path.endswith("/jobsets/cifar") and delete.data["propagationPolicy"] == "Foreground"


def test_submit_wait_follows_the_jobset_to_its_failure(env, monkeypatch):
    cluster, kube, spec = env
    from k8s import client as kclient

    original = kclient.JobClient.__init__

    def fast(self, *a, **kw):
        kw["poll_interval"] = 0.02
        original(self, *a, **kw)

    monkeypatch.setattr(kclient.JobClient, "__init__", fast)

    def controller():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not cluster.objects("JobSet"):
            time.sleep(0.02)
        time.sleep(0.1)
        _, pods = create_children(cluster, "cifar")
        cluster.set_logs(pods[0]["metadata"]["name"], ["epoch 1/10 - loss: nan"])
        time.sleep(0.2)
        set_status(cluster, "cifar", restarts=3, terminalState="Failed", conditions=[
            condition("Failed", "ReachedMaxRestarts", "jobset failed due to reaching max number of restarts")])

    threading.Thread(target=controller, daemon=True).start()
    code, out = invoke("submit", spec, *kube, "--wait", "--timeout", "20")
    assert code == exit_codes.FAILURE, out
    assert "ReachedMaxRestarts" in out and "Failed" in out


def test_a_cluster_without_jobset_is_one_clear_error_and_nothing_is_left(env):
    cluster, kube, spec = env
    cluster.emulator.unserved_groups.add(jobset.GROUP)
    code, out = invoke("submit", spec, *kube)
    assert code == exit_codes.FAILURE
    text = " ".join(out.split())
    assert text.count("error:") == 1
    assert "the API jobset.x-k8s.io/v1alpha2 (jobsets) is not served by the cluster" in text
    assert "needs the JobSet controller" in text and "--set distribution.backend=job" in text
    assert "Nothing was created" in text
    assert cluster.objects() == []
    # the same spec on the default backend works on that cluster, and list / status do not trip over the gap
    assert invoke("submit", spec, *kube, "--set", "distribution.backend=job")[0] == 0
    code, out = invoke("list", *kube, "--json")
    assert code == 0 and [j["name"] for j in json.loads(out)] == ["cifar"]
    assert status(kube)["state"] == "Pending"
    code, out = invoke("status", "other", *kube)
    assert code == exit_codes.FAILURE and "Job 'other' not found in namespace 'ml'" in out


def test_a_failure_after_the_jobset_rolls_it_back(env):
    cluster, kube, spec = env
    cluster.emulator.failures[("create", "configmaps")] = (500, "InternalError", "etcdserver: request timed out")
    code, out = invoke("submit", spec, *kube)
    assert code == exit_codes.FAILURE and "etcdserver: request timed out" in out
    assert cluster.objects() == []
    deletes = [p for m, p, _ in cluster.requests() if m == "DELETE"]
    assert deletes == ["/apis/jobset.x-k8s.io/v1alpha2/namespaces/ml/jobsets/cifar"]


def test_the_indexed_job_and_the_jobset_side_by_side_in_list(env):
    cluster, kube, spec = env
    assert invoke("submit", spec, *kube)[0] == 0
    assert invoke("submit", spec, *kube, "--name", "plain", "--set", "distribution.backend=job")[0] == 0
    create_children(cluster, "cifar")  # a child Job labelled managed-by=jobctl: shown as its JobSet only
    code, out = invoke("list", *kube, "--json")
    assert code == 0 and sorted(j["name"] for j in json.loads(out)) == ["cifar", "plain"]


def test_logs_follow_continues_with_the_new_pod_after_a_group_restart(env):
    cluster, kube, spec = env
    assert invoke("submit", spec, *kube)[0] == 0
    job, pods = create_children(cluster, "cifar", created="2026-12-02T12:00:00Z")
    cluster.set_logs(pods[0]["metadata"]["name"], ["attempt 0: epoch 1/10", "attempt 0: worker 1 lost"])
    client = cluster.client()
    lines: list[str] = []
    follower = threading.Thread(target=lambda: lines.extend(line for _, line in client.logs("cifar", follow=True)),
                                daemon=True)
    follower.start()
    deadline = time.monotonic() + 10
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    delete_children(cluster, job, pods)
    job, pods = create_children(cluster, "cifar", restart=1, created="2026-12-02T12:05:00Z")
    cluster.set_logs(pods[0]["metadata"]["name"], ["attempt 1: resumed from epoch 1", "attempt 1: done"])
    set_status(cluster, "cifar", restarts=1, replicatedJobsStatus=[{"name": "worker", "active": 1}])
    while len(lines) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    set_status(cluster, "cifar", restarts=1, terminalState="Completed",
               conditions=[condition("Completed", "AllJobsCompleted", "jobset completed successfully")])
    follower.join(10)
    assert not follower.is_alive()
    assert lines == ["attempt 0: epoch 1/10", "attempt 0: worker 1 lost",
                     "--- worker 0: pod cifar-worker-0-0-r1x0 (retry 1) ---",
                     "attempt 1: resumed from epoch 1", "attempt 1: done"]


def test_a_queued_jobset_is_left_for_kueue_to_admit(env):
    cluster, kube, spec = env
    code, out = invoke("submit", spec, *kube, "--set", "resources.queue=team-a")
    assert code == 0, out
    js = stored_jobset(cluster, "cifar")
    assert js["spec"]["suspend"] is True  # never un-suspended by jobctl: Kueue admits
    assert not [m for m, p, _ in cluster.requests() if m == "PATCH"]
    assert status(kube)["state"] == "Queued"


def test_dry_run_name_taken_and_replace_on_a_jobset(env):
    cluster, kube, spec = env
    code, out = invoke("submit", spec, *kube, "--dry-run")
    assert code == 0 and "would create jobset/cifar in namespace ml" in out and cluster.objects() == []
    assert invoke("submit", spec, *kube)[0] == 0
    old_uid = stored_jobset(cluster, "cifar")["metadata"]["uid"]
    code, out = invoke("submit", spec, *kube)
    assert code == exit_codes.FAILURE and "a JobSet named 'cifar' already exists in namespace 'ml'" in out
    code, out = invoke("submit", spec, *kube, "--replace")
    assert code == 0, out
    assert stored_jobset(cluster, "cifar")["metadata"]["uid"] != old_uid
    assert len(cluster.objects("ConfigMap")) == 1


def test_jobset_commands_never_import_tensorflow_and_render_no_client(tmp_path):
    """The JobSet path of render, submit, status, list, logs, cancel in a fresh interpreter: no TensorFlow, and
    render loads no Kubernetes client either."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from typer.testing import CliRunner
        from cli.main import app
        r = CliRunner()
        res = r.invoke(app, ["render", {str(spec)!r}, "-o", {str(tmp_path / "out")!r}])
        assert res.exit_code == 0, res.output
        client = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "urllib3"))
        assert not client, client
        from tests.support.k8s_cluster import FakeCluster, write_kubeconfig
        with FakeCluster(namespace="ml") as cluster:
            kube = ["--kubeconfig", str(write_kubeconfig(Path({str(tmp_path)!r}) / "kc", cluster.url)),
                    "--context", "fake-ml"]
            for args in (["submit", {str(spec)!r}, *kube], ["status", "cifar", *kube], ["list", *kube],
                         ["logs", "cifar", *kube], ["cancel", "cifar", *kube]):
                res = r.invoke(app, args)
                assert res.exit_code == 0, (args, res.output)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
