"""`jobctl render | submit | status | list | logs | cancel` end to end: kubeconfig -> official client -> KMock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from jobs import exit_codes
from tests.support.k8s_cluster import FakeCluster, make_pod, write_kubeconfig, write_spec

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture()
def env(tmp_path):
    with FakeCluster(namespace="ml") as cluster:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
        yield cluster, ["--kubeconfig", str(kubeconfig), "--context", "fake-ml"], tmp_path


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


# ---------------------------------------------------------------------------------------------- render
def test_render_writes_one_file_per_object_in_apply_order(tmp_path):
    spec = write_spec(tmp_path / "job.yaml", workers=2)
    code, out = invoke("render", spec, "-o", tmp_path / "out", "--run-id", "r1", "-n", "ml")
    assert code == 0, out
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["00-configmap-cifar-spec.yaml", "01-service-cifar.yaml", "02-job-cifar.yaml"]
    job = yaml.safe_load((tmp_path / "out" / "02-job-cifar.yaml").read_text())
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "ml"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "r1"
    assert "kubectl apply -f" in out


@pytest.mark.parametrize(
    "spec, extra, needle",
    [
        ({"name": "Bad_Name"}, [], "name: expected a DNS-1123 label"),
        ({"name": "x", "resources": {"workers": 100}}, [], "resources.workers: expected less than or equal to 64"),
        ({"name": "x", "distribution": {"strategy": "mirrored"}}, [], "resources.gpus=0"),
        ({"name": "x", "resources": {"node_selector": "gpu"}}, [], "resources.node_selector: expected a valid dictionary"),
        ({"name": "x"}, ["--set", "resources.gpus=-1"], "resources.gpus"),
        ({"name": "x"}, ["--name", "UPPER"], "name: expected a DNS-1123 label"),
    ],
)
def test_bad_input_exits_2_before_anything_is_written_or_sent(env, spec, extra, needle):
    cluster, kube, tmp_path = env
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out = invoke("render", path, "-o", tmp_path / "out", *extra)
    assert code == exit_codes.BAD_SPEC and needle in out
    assert not (tmp_path / "out").exists()
    code, out = invoke("submit", path, *kube, *extra)
    assert code == exit_codes.BAD_SPEC and needle in out
    assert cluster.requests() == []  # nothing contacted, let alone created


# ---------------------------------------------------------------------------------------------- submit
def test_submit_uses_the_kubeconfig_context_and_its_namespace(env):
    cluster, kube, tmp_path = env
    code, out = invoke("submit", write_spec(tmp_path / "job.yaml", workers=2), *kube)
    assert code == 0, out
    assert cluster.names() == {("ConfigMap", "cifar-spec"), ("Service", "cifar"), ("Job", "cifar")}
    assert {o["metadata"]["namespace"] for o in cluster.objects()} == {"ml"}
    assert "created job/cifar in namespace ml" in out
    auth = [r.headers.get("Authorization") for r in cluster.emulator]
    assert set(auth) == {"Bearer t0ken"}


def test_submit_twice_is_a_clear_error_then_replace_works(env):
    cluster, kube, tmp_path = env
    spec = write_spec(tmp_path / "job.yaml")
    assert invoke("submit", spec, *kube)[0] == 0
    code, out = invoke("submit", spec, *kube)
    assert code == exit_codes.FAILURE and "already exists" in out and "--replace" in out
    assert invoke("submit", spec, *kube, "--replace")[0] == 0


def test_submit_forbidden_exits_1_and_leaves_nothing(env):
    cluster, kube, tmp_path = env
    cluster.emulator.forbidden.add(("create", "configmaps"))
    code, out = invoke("submit", write_spec(tmp_path / "job.yaml"), *kube)
    assert code == exit_codes.FAILURE
    assert 'cannot create "configmaps"' in out and "RBAC rule missing" in out
    assert cluster.objects() == []


def test_dry_run_creates_nothing(env):
    cluster, kube, tmp_path = env
    code, out = invoke("submit", write_spec(tmp_path / "job.yaml", workers=2), *kube, "--dry-run")
    assert code == 0 and "would create job/cifar" in out
    assert cluster.objects() == []


def _finish_when_submitted(cluster, outcome: str):
    def run():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = cluster.objects("Job")
            if jobs and jobs[0]["spec"].get("suspend") is False:
                break
            time.sleep(0.02)
        job = cluster.objects("Job")[0]
        pod = make_pod(job, 0, phase="Running", state={"running": {}})
        cluster.set_logs(pod["metadata"]["name"], ["epoch 1/1 - accuracy: 0.93"], delay=0.01)
        cluster.put("Pod", pod)
        time.sleep(0.2)
        if outcome == "Complete":
            cluster.put("Pod", make_pod(job, 0, phase="Succeeded", state={"terminated": {"exitCode": 0}}))
        else:
            cluster.put("Pod", make_pod(job, 0, phase="Failed", state={"terminated": {"exitCode": 1, "reason": "Error"}}))
        cluster.patch("Job", "cifar", {"status": {"conditions": [{"type": outcome, "status": "True", "reason": "X"}]}})

    threading.Thread(target=run, daemon=True).start()


@pytest.mark.parametrize("outcome, code", [("Complete", 0), ("Failed", 1)])
def test_submit_wait_exit_code_is_the_jobs_result_and_logs_stream(env, outcome, code, monkeypatch):
    cluster, kube, tmp_path = env
    from k8s import client as kclient

    original = kclient.JobClient.__init__

    def fast(self, *a, **kw):
        kw["poll_interval"] = 0.02
        original(self, *a, **kw)

    monkeypatch.setattr(kclient.JobClient, "__init__", fast)
    _finish_when_submitted(cluster, outcome)
    exit_code, out = invoke("submit", write_spec(tmp_path / "job.yaml"), *kube, "--wait", "--timeout", "20")
    assert exit_code == code, out
    assert "epoch 1/1 - accuracy: 0.93" in out
    assert ("Succeeded" if code == 0 else "Failed") in out


# ------------------------------------------------------------------------------------ status, list, logs, cancel
def test_status_prints_the_reasons(env):
    cluster, kube, tmp_path = env
    assert invoke("submit", write_spec(tmp_path / "job.yaml", workers=2), *kube)[0] == 0
    job = cluster.objects("Job")[0]
    cluster.put("Pod", make_pod(job, 0, suffix="a", phase="Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    cluster.put("Pod", make_pod(job, 1, suffix="b", phase="Pending", node=None, conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
    }]))
    code, out = invoke("status", "cifar", *kube)
    assert code == 0, out
    flat = " ".join(out.split())
    assert "OOMKilled" in flat and "raise resources.memory" in flat
    assert "Unschedulable" in flat and "no node carries the labels of resources.node_selector" in flat
    code, out = invoke("status", "cifar", *kube, "--json")
    report = json.loads(out)
    assert [p["state"] for p in report["pods"]] == ["OOMKilled", "Unschedulable"]
    code, out = invoke("status", "missing", *kube)
    assert code == 1 and "Job 'missing' not found in namespace 'ml'" in out


def test_list_json_and_sweep_filter(env):
    cluster, kube, tmp_path = env
    spec = write_spec(tmp_path / "job.yaml")
    assert invoke("submit", spec, *kube)[0] == 0
    assert invoke("submit", spec, *kube, "--name", "trial-1", "--set", "labels={jobctl.io/sweep: lr}")[0] == 0
    code, out = invoke("list", *kube, "--json")
    assert code == 0 and sorted(j["name"] for j in json.loads(out)) == ["cifar", "trial-1"]
    code, out = invoke("list", *kube, "--json", "--sweep", "lr")
    assert [j["name"] for j in json.loads(out)] == ["trial-1"]
    code, out = invoke("list", *kube, "-l", "team=none")
    assert code == 0 and "no jobctl jobs in namespace ml" in out


def test_logs_all_prefixes_the_worker(env):
    cluster, kube, tmp_path = env
    assert invoke("submit", write_spec(tmp_path / "job.yaml", workers=2), *kube)[0] == 0
    job = cluster.objects("Job")[0]
    for i in range(2):
        pod = make_pod(job, i, suffix=f"w{i}", phase="Running", state={"running": {}})
        cluster.put("Pod", pod)
        cluster.set_logs(pod["metadata"]["name"], [f"hello from {i}"])
    code, out = invoke("logs", "cifar", *kube, "--all")
    assert code == 0 and "[worker 0] hello from 0" in out and "[worker 1] hello from 1" in out
    code, out = invoke("logs", "cifar", *kube, "--worker", "1")
    assert out.strip() == "hello from 1"
    assert invoke("logs", "cifar", *kube, "--worker", "1", "--all")[0] == exit_codes.BAD_SPEC


def test_cancel(env):
    cluster, kube, tmp_path = env
    assert invoke("submit", write_spec(tmp_path / "job.yaml", workers=2), *kube)[0] == 0
    code, out = invoke("cancel", "cifar", *kube)
    assert code == 0 and "deleted job/cifar" in out
    assert cluster.objects() == []
    assert invoke("cancel", "cifar", *kube)[0] == 1


def test_unreachable_api_is_a_clear_error(tmp_path):
    from bench.common import free_port

    port = free_port()
    kubeconfig = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    code, out = invoke("list", "--kubeconfig", kubeconfig, "--context", "fake-ml")
    assert code == 1 and "cannot reach the Kubernetes API" in out
    assert time.monotonic() - started < 10


def test_missing_kubeconfig_and_not_in_a_pod(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    code, out = invoke("list")
    assert code == 1 and "no Kubernetes configuration" in out


def test_in_cluster_configuration(tmp_path, monkeypatch):
    from k8s import client as kclient
    from k8s import config as kconfig

    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("pod-token")
    (sa / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    (sa / "namespace").write_text("team-a")
    monkeypatch.setattr(kconfig, "SERVICE_ACCOUNT_DIR", str(sa))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api, namespace = kconfig.load_api_client()
    assert api.configuration.host == "https://10.96.0.1:443"
    bearer = api.configuration.auth_settings()["BearerToken"]  # what each request's Authorization header carries
    assert bearer["key"] == "authorization" and bearer["value"].lower() == "bearer pod-token"
    assert namespace == "team-a"
    assert kclient.JobClient().namespace == "team-a"


# ---------------------------------------------------------------------------------------- no TensorFlow
def test_cluster_commands_never_import_tensorflow(tmp_path):
    """render, submit, status, list, logs and cancel run in a fresh interpreter without loading TensorFlow."""
    script = textwrap.dedent(f"""
        import sys, yaml
        from pathlib import Path
        from typer.testing import CliRunner
        from cli.main import app
        from tests.support.k8s_cluster import FakeCluster, write_kubeconfig, write_spec
        tmp = Path({str(tmp_path)!r})
        spec = write_spec(tmp / "job.yaml", workers=2)
        r = CliRunner()
        with FakeCluster(namespace="ml") as cluster:
            kube = ["--kubeconfig", str(write_kubeconfig(tmp / "kc", cluster.url)), "--context", "fake-ml"]
            for args in (["render", str(spec), "-o", str(tmp / "out")], ["submit", str(spec), *kube],
                         ["status", "cifar", *kube], ["list", *kube], ["logs", "cifar", *kube],
                         ["cancel", "cifar", *kube]):
                res = r.invoke(app, args)
                assert res.exit_code == 0, (args, res.output)
        loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith(("tensorflow.", "keras", "tf_keras")))
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_render_loads_neither_kubernetes_nor_tensorflow(tmp_path):
    """What keeps `render` fast (bench/bench_render.py times it): it imports no cluster client and no TensorFlow."""
    spec = write_spec(tmp_path / "job.yaml", workers=4)
    script = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from cli.main import app
        res = CliRunner().invoke(app, ["render", {str(spec)!r}, "-o", {str(tmp_path / "out")!r}])
        assert res.exit_code == 0, res.output
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("kubernetes", "tensorflow", "keras", "urllib3"))
        print("LOADED", heavy)
        sys.exit(1 if heavy else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_an_empty_or_invalid_job_name_is_refused_before_any_request(env):
    """`jobctl cancel ''` would otherwise DELETE the Jobs collection: every Job in the namespace."""
    cluster, kube, _ = env
    for command in ("cancel", "status", "logs"):
        for name in ("", "Bad_Name", "x" * 254):
            code, out = invoke(command, name, *kube)
            assert code == exit_codes.BAD_SPEC, (command, name, out)
            assert "JOB: expected a Kubernetes object name" in out and "Traceback" not in out
    assert cluster.requests() == []


def test_the_client_never_sends_an_empty_name():
    from k8s.client import InvalidNameError, JobClient

    client = JobClient("ml", api_client=object())
    with pytest.raises(InvalidNameError, match="Job name: expected a Kubernetes object name"):
        client._path("Job", "")
    assert client._path("Job").endswith("/namespaces/ml/jobs")


def test_logs_worker_and_tail_ranges(env):
    cluster, kube, tmp_path = env
    assert invoke("submit", write_spec(tmp_path / "job.yaml", workers=2), *kube)[0] == 0
    code, out = invoke("logs", "cifar", "--worker", "9", *kube)
    assert code == exit_codes.BAD_SPEC and "--worker 9: job 'cifar' has 2 workers (expected 0..1)" in out
    for args in (["--worker", "-1"], ["--tail", "0"]):
        assert invoke("logs", "cifar", *args, *kube)[0] == exit_codes.BAD_SPEC


def test_a_bad_namespace_is_refused_before_contacting_the_cluster(env):
    cluster, kube, tmp_path = env
    code, out = invoke("submit", write_spec(tmp_path / "job.yaml"), "-n", "Bad_NS", "--dry-run", *kube)
    assert code == exit_codes.BAD_SPEC and "--namespace: expected a DNS-1123 label" in out
    assert cluster.requests() == []


def test_kubeconfigs_that_are_not_yaml_and_kubeconfig_lists(env, monkeypatch):
    cluster, _, tmp_path = env
    garbage = tmp_path / "garbage"
    garbage.write_text("garbage: [")
    scalar = tmp_path / "scalar"
    scalar.write_text("just a string\n")
    for bad in (garbage, scalar):
        code, out = invoke("list", "--kubeconfig", str(bad))
        assert code == exit_codes.FAILURE and f"kubeconfig '{bad}' is not a valid kubeconfig" in out, out
        assert "Traceback" not in out
    # $KUBECONFIG lists files as kubectl merges them: a missing first entry does not hide the second.
    good = write_kubeconfig(tmp_path / "kubeconfig-2", cluster.url)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}{os.pathsep}{good}")
    code, out = invoke("list", "--context", "fake-ml")
    assert code == 0, out


def test_a_missing_namespace_and_a_server_that_is_not_kubernetes(env):
    from k8s.client import JobClient

    cluster, _, _ = env
    client = cluster.client()
    status = '{"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "namespaces \\"nope\\" not found"}'
    err = JobClient("nope", api_client=client.api)._api_error("POST", "Job", None, None, 404, status)
    assert "namespace 'nope' does not exist" in str(err)
    err = client._api_error("GET", "Job", "x", None, 404, "<html>404 page not found</html>")
    assert "answered HTTP 404 without a Kubernetes Status" in str(err) and "cluster-info" in str(err)


def test_submit_replace_dry_run_reports_what_it_would_replace(env):
    cluster, kube, tmp_path = env
    spec = write_spec(tmp_path / "job.yaml")
    assert invoke("submit", spec, *kube)[0] == 0
    code, out = invoke("submit", spec, "--replace", "--dry-run", *kube)
    assert code == 0, out
    assert "would replace job/cifar in namespace ml" in out
    assert len(cluster.objects("Job")) == 1  # a dry run changes nothing


def test_logs_follow_says_it_is_waiting_when_no_pod_has_started(env):
    cluster, kube, tmp_path = env
    assert invoke("submit", write_spec(tmp_path / "job.yaml"), *kube)[0] == 0
    cluster.patch("Job", "cifar", {"status": {"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "no pod ever ran"}]}})
    _, out = invoke("logs", "cifar", "-f", *kube)
    assert "waiting for a pod of job cifar to start" in out, out


def test_render_warns_when_data_path_is_not_on_the_artifacts_volume(tmp_path):
    """The dogs recipe reads data/stanford-dogs-3: fine on a laptop, nothing in the pod (only /artifacts is shared)."""
    code, out = invoke("render", "examples/dogs-image-folder.yaml", "-o", tmp_path / "a")
    assert code == 0, out
    assert "warning: data.path 'data/stanford-dogs-3' is not on the artifacts volume the pod mounts at /artifacts" in out
    code, out = invoke("render", "examples/dogs-image-folder.yaml", "-o", tmp_path / "b",
                       "--set", "data.path=/artifacts/data/stanford-dogs-3")
    assert code == 0 and "warning" not in out
    code, out = invoke("render", "examples/digits-cnn.yaml", "-o", tmp_path / "c")
    assert code == 0 and "warning" not in out


def test_render_takes_a_gs_packed_directory_as_remote_not_as_a_path_inside_the_image(tmp_path):
    """gs:// is read in place (tf.io.gfile), so no 'not on the artifacts volume' warning; a gs:// the dataset cannot
    read, or a scheme TensorFlow cannot, gets a warning saying so."""
    base = ["--set", "data.dataset=tfrecord", "--set", "data.resize=[64,64]"]
    code, out = invoke("render", "examples/dogs-image-folder.yaml", "-o", tmp_path / "a", *base,
                       "--set", "data.path=gs://bucket/dogs-packed")
    assert code == 0 and "warning" not in out, out
    code, out = invoke("render", "examples/dogs-image-folder.yaml", "-o", tmp_path / "b",
                       "--set", "data.path=gs://bucket/dogs")
    assert code == 0, out
    assert "not on the artifacts volume" not in out
    assert "data.path 'gs://bucket/dogs' is not a local path: only data.dataset tfrecord reads gs://" in out
    code, out = invoke("render", "examples/dogs-image-folder.yaml", "-o", tmp_path / "c", *base,
                       "--set", "data.path=s3://bucket/dogs-packed")
    assert code == 0 and "read gs:// but not s3://" in out, out
