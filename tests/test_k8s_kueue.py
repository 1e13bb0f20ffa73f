"""Kueue end to end against the KMock API over HTTP, through the real kubernetes client: a queued submit, its
Workload pending with Kueue's reason and a LocalQueue position, admission, an eviction, re-admission (the same
run resumes), the finish, and `status` right at every step; the visibility API missing or forbidden; `cancel`
removing the Workload with the Job; the Role granting what the client sends, and nothing more."""

from __future__ import annotations

import json
import threading
import time

import pytest

from jobs.spec import parse_spec
from k8s import kueue
from k8s.manifests import QUEUE_LABEL, build_job_objects, find_job
from tests.support import crds
from tests.support.k8s_cluster import FakeCluster, make_pod, write_kubeconfig, write_spec
from tests.support.kueue_script import KueueScript

QUEUED = {"name": "cifar", "resources": {"workers": 2, "gpus": 4, "queue": "team-a", "gpu_type": "NVIDIA-H100-80GB-HBM3"},
          "training": {"batch_size": 2048}}


def queued_objects(**resources):
    spec = parse_spec({**QUEUED, "resources": {**QUEUED["resources"], **resources}})
    return build_job_objects(spec, run_id="20261202-120000")


def jobctl_sent(cluster) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in cluster.requests()]


def test_a_queued_job_is_rendered_suspended_with_the_queue_label():
    job = find_job(queued_objects())
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["spec"]["suspend"] is True  # also when applied with kubectl: no pod before Kueue admits it
    unqueued = find_job(build_job_objects(parse_spec({"name": "cifar"}), run_id="r"))
    assert QUEUE_LABEL not in unqueued["metadata"]["labels"] and "suspend" not in unqueued["spec"]


def test_queued_submit_admission_eviction_resume_and_finish(cluster):
    client = cluster.client()
    client.submit(queued_objects())
    script = KueueScript(cluster, "cifar")
    assert script.job()["spec"]["suspend"] is True
    assert not [r for r in jobctl_sent(cluster) if r[0] == "PATCH"], "jobctl must never un-suspend a queued Job"

    # Before Kueue has made a Workload: queued, and one line saying what to check.
    report = client.status("cifar")
    assert report.state == "Queued" and report.queue.state == "pending" and report.queue.reason == "NoWorkload"

    # Pending: Kueue's reason, and the position from the visibility API (1-based).
    script.create_workload()
    crds.validate(script.workload())
    cluster.emulator.pending_workloads["team-a"] = ["job-other-1a2b3", script.workload_name]
    report = client.status("cifar")
    assert report.state == "Queued"
    assert (report.queue.state, report.queue.reason, report.queue.position) == ("pending", "Pending", 2)
    assert "insufficient unused quota for nvidia.com/gpu in flavor h100" in report.queue.message
    assert report.queue.line().startswith("queue team-a: pending, 2nd in line: Pending - couldn't assign flavors")

    # Admitted: into which ClusterQueue, on which flavours; Kueue resumed the Job.
    script.admit()
    crds.validate(script.workload())
    cluster.emulator.pending_workloads["team-a"] = ["job-other-1a2b3"]
    first_pods = script.start_pods(make_pod)
    report = client.status("cifar")
    assert report.state == "Running" and [p.state for p in report.pods] == ["Running", "Running"]
    assert (report.queue.state, report.queue.cluster_queue) == ("admitted", "team-gpus")
    assert report.queue.flavors["nvidia.com/gpu"] == "h100" and report.queue.position is None
    assert "admitted into ClusterQueue team-gpus (cpu on flavour default-flavor" in report.queue.line()

    # Evicted by a higher-priority workload: Kueue suspends the Job, its pods go; jobctl says so and waits.
    script.evict()
    crds.validate(script.workload())
    cluster.emulator.pending_workloads["team-a"] = [script.workload_name, "job-other-1a2b3"]
    report = client.status("cifar")
    assert report.state == "Queued" and report.pods == []
    assert (report.queue.state, report.queue.reason, report.queue.position) == ("preempted", "InClusterQueue", 1)

    # Re-admitted: the new pods run the same command, on the same run directory and claim, so BackupAndRestore
    # resumes the run where the evicted pods saved it (tests/test_distributed.py proves the resume is exact).
    script.readmit()
    second_pods = script.start_pods(make_pod)
    report = client.status("cifar")
    assert report.state == "Running" and report.queue.state == "admitted"
    for before, after in zip(first_pods, second_pods):
        assert before["metadata"]["name"] != after["metadata"]["name"]
        assert before["spec"]["containers"][0]["args"] == after["spec"]["containers"][0]["args"]
        assert "--run-id" in after["spec"]["containers"][0]["args"] and "20261202-120000" in after["spec"]["containers"][0]["args"]
        assert before["spec"]["volumes"] == after["spec"]["volumes"]

    script.finish()
    report = client.status("cifar")
    assert report.state == "Succeeded" and report.queue.state == "finished"
    assert not [r for r in jobctl_sent(cluster) if r[0] == "PATCH"]


@pytest.mark.parametrize("conditions, state, reason", [
    ([("QuotaReserved", "False", "Inadmissible", "LocalQueue team-a doesn't exist")], "pending", "Inadmissible"),
    ([], "pending", "Waiting"),
    ([("Admitted", "True", "Admitted", ""), ("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout")],
     "evicted", "PodsReadyTimeout"),
    ([("Admitted", "True", "Admitted", ""), ("Evicted", "True", "Preempted", "")], "preempted", "Preempted"),
    ([("Admitted", "True", "Admitted", ""), ("Finished", "True", "Succeeded", "")], "finished", "Succeeded"),
])
def test_workload_conditions_read_as_kueue_means_them(conditions, state, reason):
    workload = {"metadata": {"name": "w"}, "status": {"conditions": [
        {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": f"2026-12-02T12:00:0{i}Z"}
        for i, (t, s, r, m) in enumerate(conditions)]}}
    report = kueue.interpret_workload("team-a", workload)
    assert (report.state, report.reason) == (state, reason)


def test_no_position_where_the_visibility_api_is_forbidden_or_missing(cluster):
    client = cluster.client()
    client.submit(queued_objects())
    script = KueueScript(cluster, "cifar")
    script.create_workload()
    cluster.emulator.forbidden.add(("get", "localqueues/pendingworkloads"))
    queue = client.status("cifar").queue
    assert queue.state == "pending" and queue.position is None
    assert 'forbidden to get "localqueues/pendingworkloads" (API group "visibility.kueue.x-k8s.io")' in queue.line()
    cluster.emulator.forbidden.clear()
    cluster.emulator.unserved_groups.add("visibility.kueue.x-k8s.io")
    queue = client.status("cifar").queue
    assert "visibility API (visibility.kueue.x-k8s.io/v1beta1) is not served here" in queue.line()
    cluster.emulator.unserved_groups.clear()
    queue = client.status("cifar").queue  # the queue is not known to the visibility API
    assert queue.position_note == "no position: LocalQueue 'team-a' does not exist in namespace 'ml'"


def test_a_cluster_without_kueue_says_so_in_one_line():
    with FakeCluster(namespace="ml", kueue=False) as cluster:
        client = cluster.client()
        client.submit(queued_objects())
        report = client.status("cifar")
        assert report.state == "Queued" and report.queue.state == "unknown"
        assert report.queue.line() == ("queue team-a: unknown (Kueue is not installed in this cluster (no "
                                       "kueue.x-k8s.io Workload API))")
        assert [r.queue.state for r in client.list()] == ["unknown"]


def test_cancel_removes_the_workload_with_the_job(cluster):
    client = cluster.client()
    client.submit(queued_objects())
    KueueScript(cluster, "cifar").create_workload()
    assert len(cluster.objects("Workload")) == 1
    client.delete("cifar")
    assert cluster.objects("Workload") == [] and cluster.objects("Job") == []
    # Foreground deletion removes the Job's dependents, the Workload among them: jobctl itself never deletes a
    # Workload (its Role only reads them).
    assert not [p for m, p in jobctl_sent(cluster) if m == "DELETE" and "workloads" in p]


def test_list_shows_each_queued_job_with_its_state_and_position(cluster):
    client = cluster.client()
    client.submit(queued_objects())
    client.submit(build_job_objects(parse_spec({"name": "plain"}), run_id="r1"))
    script = KueueScript(cluster, "cifar")
    script.create_workload()
    cluster.emulator.pending_workloads["team-a"] = ["a", "b", script.workload_name]
    reports = {r.name: r for r in client.list()}
    assert reports["plain"].queue is None
    assert (reports["cifar"].queue.state, reports["cifar"].queue.position) == ("pending", 3)


def test_cli_submit_wait_shows_queued_until_admission_then_the_outcome(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from k8s import client as kclient

    original = kclient.JobClient.__init__

    def fast(self, *args, **kwargs):
        kwargs["poll_interval"] = 0.05
        original(self, *args, **kwargs)

    monkeypatch.setattr(kclient.JobClient, "__init__", fast)
    spec = write_spec(tmp_path / "job.yaml", queue="team-a", gpu_type="NVIDIA-H100-80GB-HBM3")
    with FakeCluster(namespace="ml") as cluster:
        kubeconfig = write_kubeconfig(tmp_path / "kc", cluster.url)
        cluster.emulator.pending_workloads["team-a"] = []

        def kueue_and_the_job_controller():
            deadline = time.monotonic() + 20
            while not cluster.objects("Job") and time.monotonic() < deadline:
                time.sleep(0.02)
            script = KueueScript(cluster, "cifar")
            script.create_workload()
            cluster.emulator.pending_workloads["team-a"] = [script.workload_name]
            time.sleep(0.5)
            cluster.emulator.pending_workloads["team-a"] = []
            script.admit()
            (pod,) = script.start_pods(make_pod)
            cluster.set_logs(pod["metadata"]["name"], ["epoch 1/1 done"])
            time.sleep(0.3)
            script.finish()

        thread = threading.Thread(target=kueue_and_the_job_controller, daemon=True)
        thread.start()
        result = CliRunner().invoke(app, ["submit", str(spec), "--wait", "--timeout", "30", "--kubeconfig",
                                          str(kubeconfig), "--context", "fake-ml"])
        thread.join(10)
    assert result.exit_code == 0, result.output
    assert "job cifar: queued; queue team-a: pending, 1st in line: Pending - couldn't assign flavors" in result.output
    assert "job cifar: running" in result.output and "job cifar: succeeded" in result.output
    assert result.output.index("queued") < result.output.index("job cifar: running")


def test_cli_status_list_and_json_show_the_queue(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    with FakeCluster(namespace="ml") as cluster:
        kube = ["--kubeconfig", str(write_kubeconfig(tmp_path / "kc", cluster.url)), "--context", "fake-ml"]
        cluster.client().submit(queued_objects())
        script = KueueScript(cluster, "cifar")
        script.create_workload()
        cluster.emulator.pending_workloads["team-a"] = ["a", script.workload_name]
        runner = CliRunner()
        status = runner.invoke(app, ["status", "cifar", *kube])
        listing = runner.invoke(app, ["list", *kube])
        as_json = runner.invoke(app, ["status", "cifar", "--json", *kube])
    assert status.exit_code == 0 and "job cifar in ml: Queued" in status.output
    assert "queue team-a: pending, 2nd in line: Pending - couldn't assign flavors" in status.output
    assert listing.exit_code == 0 and "QUEUE" in listing.output and "2nd in line" in listing.output
    queue = json.loads(as_json.output)["queue"]
    assert (queue["state"], queue["position"], queue["workload"]) == ("pending", 2, script.workload_name)
