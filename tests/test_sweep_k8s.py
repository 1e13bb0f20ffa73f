"""The Kubernetes sweep backend against KMock over HTTP (the team's FakeCluster): one labelled Job per trial, never
more than `parallelism` active Jobs, results read back from the artifacts store, adoption on resume, Ctrl-C."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from sweeps.backends.kubernetes import K8sBackend
from sweeps.state import read_json
from sweeps.scheduler import SweepInterrupted, run_sweep
from sweeps.spec import load_sweep
from k8s import common
from sweeps.errors import SweepError
from k8s.manifests import SPEC_KEY, spec_configmap_name

BASE = {"name": "base", "data": {"dataset": "digits"}, "model": {"type": "mlp"}, "training": {"epochs": 2}}


def make_sweep(tmp_path, **kw):
    data = {"name": "lr", "base": BASE, "parameters": {"training.learning_rate": [0.1, 0.01, 0.001]},
            "parallelism": 2, "artifacts_dir": str(tmp_path / "pvc"), "sweep_dir": str(tmp_path / "pvc/sweeps/lr")}
    data.update(kw)
    return load_sweep(data)


def jobs(cluster) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in cluster.objects("Job")}


def active(cluster) -> list[str]:
    return sorted(n for n, j in jobs(cluster).items()
                  if not any(c.get("type") in ("Complete", "Failed") for c in (j.get("status") or {}).get("conditions") or []))


def write_metrics(tmp_path, trial_name: str, value: float, run_id: str = "r0") -> None:
    """What the trainer pod writes on the shared volume (its paths are the pod's: /artifacts/...)."""
    run_dir = tmp_path / "pvc" / "runs" / trial_name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pvc" / "models" / trial_name / "1").mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({
        "status": "succeeded", "best_val_accuracy": value, "test_accuracy": value - 0.01, "epochs_run": 2,
        "export_path": f"/artifacts/models/{trial_name}/1", "run_dir": f"/artifacts/runs/{trial_name}/{run_id}",
    }))


def complete(cluster, name: str) -> None:
    cluster.patch("Job", name, {"status": {"succeeded": 1, "active": 0, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}})


def fail(cluster, name: str, message: str) -> None:
    cluster.patch("Job", name, {"status": {"failed": 1, "active": 0, "conditions": [
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": message}]}})


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def start_in_thread(fn):
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_one_labelled_job_per_trial_parallelism_and_results_from_the_store(cluster, tmp_path):
    s = make_sweep(tmp_path)
    backend = K8sBackend(s, cluster.client(), image="registry.example/jobctl-train:1")
    max_active = []
    thread, box = start_in_thread(lambda: run_sweep(
        s, backend, parallelism=2, poll_seconds=0.05,
        on_progress=lambda p: max_active.append(len(active(cluster)))))

    wait_for(lambda: len(jobs(cluster)) == 2)
    time.sleep(0.3)  # several scheduler polls: the third trial must wait for a free slot
    assert sorted(jobs(cluster)) == ["lr-t000-r0", "lr-t001-r0"]
    job = jobs(cluster)["lr-t001-r0"]
    labels = job["metadata"]["labels"]
    assert labels[common.LABEL_SWEEP] == "lr" and labels[common.LABEL_TRIAL] == "t001"
    assert job["spec"]["template"]["metadata"]["labels"][common.LABEL_TRIAL] == "t001"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/jobctl-train:1"
    assert container["args"][container["args"].index("--run-id") + 1] == "r0"
    # The trial's resolved spec travels in the Job's ConfigMap: its own name and the parameter value.
    cm = next(o for o in cluster.objects("ConfigMap") if o["metadata"]["name"] == spec_configmap_name("lr-t001-r0"))
    trial_spec = yaml.safe_load(cm["data"][SPEC_KEY])
    assert trial_spec["name"] == "lr-t001" and trial_spec["export"]["model_name"] == "lr-t001"
    assert trial_spec["training"]["learning_rate"] == 0.01

    write_metrics(tmp_path, "lr-t001", 0.93)
    complete(cluster, "lr-t001-r0")
    wait_for(lambda: "lr-t002-r0" in jobs(cluster))
    assert active(cluster) == ["lr-t000-r0", "lr-t002-r0"]
    fail(cluster, "lr-t000-r0", "Container trainer for pod ml/lr-t000-r0-x failed with exit code 1")
    write_metrics(tmp_path, "lr-t002", 0.95)
    complete(cluster, "lr-t002-r0")
    thread.join(10)
    assert "error" not in box, box.get("error")
    out = box["result"]
    assert max(max_active) <= 2
    assert out.counts["succeeded"] == 2 and out.counts["failed"] == 1

    board = read_json(s.sweep_dir / "leaderboard.json")
    assert [(e["trial"], e["status"]) for e in board] == [("t002", "succeeded"), ("t001", "succeeded"), ("t000", "failed")]
    # Export paths written by the pods are re-rooted on the artifacts store as mounted here.
    assert board[0]["export_path"] == str((tmp_path / "pvc/models/lr-t002/1").resolve())
    assert "Job lr-t000-r0 failed: PodFailurePolicy" in board[2]["error"] and "exit code 1" in board[2]["error"]
    state = read_json(s.sweep_dir / "sweep.json")
    assert state["runs"]["t001/r0"]["job"] == "lr-t001-r0" and state["runs"]["t001/r0"]["namespace"] == "ml"
    # Parallelism is counted in the cluster through the sweep label.
    lists = [(m, p, q) for m, p, q in cluster.requests() if m == "GET" and p.endswith("/jobs") and q.get("labelSelector")]
    assert lists and all("jobctl.io/sweep=lr" in q["labelSelector"] for _, _, q in lists)


def test_jobs_of_another_process_count_against_parallelism_and_are_adopted_on_resume(cluster, tmp_path):
    s = make_sweep(tmp_path)

    class Crash(Exception):
        pass

    def crash_after_two(p):
        if p.kind == "started" and p.counts["running"] == 2:
            raise Crash()  # the sweep process dies: no cleanup, its Jobs keep running

    with pytest.raises(Crash):
        run_sweep(s, K8sBackend(s, cluster.client()), parallelism=2, poll_seconds=0.05, on_progress=crash_after_two)
    assert sorted(jobs(cluster)) == ["lr-t000-r0", "lr-t001-r0"]
    posts_before = sum(1 for m, p, _ in cluster.requests() if m == "POST" and p.endswith("/jobs"))

    resumed = make_sweep(tmp_path)
    thread, box = start_in_thread(lambda: run_sweep(resumed, K8sBackend(resumed, cluster.client()), parallelism=2,
                                                    poll_seconds=0.05))
    time.sleep(0.4)
    assert sorted(jobs(cluster)) == ["lr-t000-r0", "lr-t001-r0"], "both slots are taken by the adopted Jobs"
    write_metrics(tmp_path, "lr-t000", 0.9)
    complete(cluster, "lr-t000-r0")
    wait_for(lambda: "lr-t002-r0" in jobs(cluster))
    for name, v in (("lr-t001", 0.8), ("lr-t002", 0.7)):
        write_metrics(tmp_path, name, v)
        complete(cluster, f"{name}-r0")
    thread.join(10)
    assert "error" not in box, box.get("error")
    assert box["result"].counts["succeeded"] == 3
    posts_after = sum(1 for m, p, _ in cluster.requests() if m == "POST" and p.endswith("/jobs"))
    assert posts_after - posts_before == 1  # only t002 was submitted; t000 and t001 were adopted


def test_ctrl_c_deletes_the_active_jobs_and_resume_resubmits_them(cluster, tmp_path):
    s = make_sweep(tmp_path)

    def interrupt_after_two(p):
        if p.kind == "started" and p.counts["running"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted):
        run_sweep(s, K8sBackend(s, cluster.client()), parallelism=2, poll_seconds=0.05, on_progress=interrupt_after_two)
    assert jobs(cluster) == {}
    state = read_json(s.sweep_dir / "sweep.json")
    assert {r["status"] for r in state["runs"].values()} == {"interrupted"}

    thread, box = start_in_thread(lambda: run_sweep(s, K8sBackend(s, cluster.client()), parallelism=2, poll_seconds=0.05))
    wait_for(lambda: len(jobs(cluster)) == 2)
    for i, name in enumerate(("lr-t000", "lr-t001")):
        write_metrics(tmp_path, name, 0.5 + i / 10)
        complete(cluster, f"{name}-r0")
    wait_for(lambda: "lr-t002-r0" in jobs(cluster))
    write_metrics(tmp_path, "lr-t002", 0.4)
    complete(cluster, "lr-t002-r0")
    thread.join(10)
    assert box["result"].counts["succeeded"] == 3 and box["result"].best["trial"] == "t001"


def test_specs_kubernetes_rejects_fail_before_any_job_is_created(cluster, tmp_path):
    s = make_sweep(tmp_path, parameters={"resources.node_selector": [{"disk": "ssd"}, {"bad key!": "x"}]})
    with pytest.raises(SweepError, match="(?s)trial t001.*node_selector"):
        run_sweep(s, K8sBackend(s, cluster.client()), parallelism=2, poll_seconds=0.05)
    assert jobs(cluster) == {} and not (Path(s.sweep_dir) / "sweep.json").exists()


def test_cli_sweep_on_kubernetes_through_a_kubeconfig(cluster, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app
    from tests.support.k8s_cluster import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", cluster.url)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "cli", "base": BASE, "parameters": {"model.dropout": [0.0, 0.5]}, "parallelism": 1}))
    args = ["sweep", str(tmp_path / "sweep.yaml"), "--backend", "k8s", "--kubeconfig", str(kubeconfig),
            "--context", "fake-ml", "--poll", "0.05", "--artifacts-dir", str(tmp_path / "pvc")]
    thread, box = start_in_thread(lambda: CliRunner().invoke(app, args))
    for name, value in (("cli-t000", 0.7), ("cli-t001", 0.8)):
        wait_for(lambda: f"{name}-r0" in jobs(cluster))
        assert len(active(cluster)) == 1  # --parallelism from the spec: 1
        write_metrics(tmp_path, name, value)
        complete(cluster, f"{name}-r0")
    thread.join(10)
    result = box["result"]
    assert result.exit_code == 0, result.output
    assert "backend k8s" in result.stdout and "t001 succeeded" in result.stdout
    assert "best t001 best_val_accuracy 0.8000" in result.stdout
    assert json.loads((tmp_path / "pvc/sweeps/cli/leaderboard.json").read_text())[0]["trial"] == "t001"
    assert all(j["metadata"]["namespace"] == "ml" for j in cluster.objects("Job"))


# ------------------------------------------------------------------------------------------ Optuna: TPE + ASHA
def play_pods(cluster, tmp_path, done: threading.Event) -> None:
    """What the trainer pods do, one epoch per tick: history.json on the shared volume after every epoch (values
    from the trial's learning rate, best at 0.01), then metrics.json and a Complete Job. A pruned trial's Job is
    deleted by the sweep: its pod is gone, and so is its writing. A resubmitted Job goes on from its history, as
    the trainer resumes from its backup."""
    import math

    while not done.is_set():
        for name, job in list(jobs(cluster).items()):
            if any(c.get("type") in ("Complete", "Failed") for c in (job.get("status") or {}).get("conditions") or []):
                continue
            cm = next((o for o in cluster.objects("ConfigMap") if o["metadata"]["name"] == spec_configmap_name(name)), None)
            if cm is None:
                continue
            spec = yaml.safe_load(cm["data"][SPEC_KEY])
            lr, trial = spec["training"]["learning_rate"], spec["name"]
            run_dir = tmp_path / "pvc" / "runs" / trial / name.rsplit("-", 1)[1]
            run_dir.mkdir(parents=True, exist_ok=True)
            path = run_dir / "history.json"
            history = json.loads(path.read_text()) if path.exists() else {"epochs": [], "val_accuracy": []}
            epoch = len(history["epochs"]) + 1
            if epoch <= spec["training"]["epochs"]:
                history["epochs"].append(epoch)
                history["val_accuracy"].append(round((1 - abs(math.log10(lr) + 2) / 4) * (1 - 0.5 / epoch), 6))
                path.write_text(json.dumps(history))
            else:
                write_metrics(tmp_path, trial, max(history["val_accuracy"]), run_id=run_dir.name)
                complete(cluster, name)
        time.sleep(0.03)


def test_tpe_with_asha_on_kubernetes_prunes_by_deleting_jobs_resumes_and_hands_the_best_on(cluster, tmp_path):
    from sweeps.leaderboard import sweep_exports

    def tpe_asha():
        return make_sweep(tmp_path, base=dict(BASE, training={"epochs": 9}), max_trials=5,
                          parameters={"training.learning_rate": [1.0, 0.1, 0.0001, 0.01, 0.03]},
                          algorithm={"type": "tpe", "seed": 3, "n_startup_trials": 5},
                          pruner={"type": "asha", "min_epochs": 1, "reduction_factor": 3})

    done = threading.Event()
    pods = threading.Thread(target=play_pods, args=(cluster, tmp_path, done), daemon=True)
    pods.start()
    events: list = []

    def interrupt_after_two(p):
        if p.kind in ("finished", "pruned"):
            events.append(p.trial)
            if len(events) == 2:
                raise KeyboardInterrupt

    s = tpe_asha()
    try:
        with pytest.raises(SweepInterrupted):
            run_sweep(s, K8sBackend(s, cluster.client()), parallelism=1, poll_seconds=0.02,
                      on_progress=interrupt_after_two)
        assert active(cluster) == []
        resumed = tpe_asha()
        out = run_sweep(resumed, K8sBackend(resumed, cluster.client()), parallelism=1, poll_seconds=0.02)
    finally:
        done.set()
        pods.join(5)
    c = out.counts
    assert c["total"] == 5 and c["failed"] == 0 and c["pruned"] >= 1 and c["succeeded"] + c["pruned"] == 5
    deletes = {p.rsplit("/", 1)[1] for m, p, _ in cluster.requests() if m == "DELETE" and "/jobs/" in p}
    state = read_json(s.sweep_dir / "sweep.json")
    for e in out.leaderboard:
        if e["status"] == "pruned":
            run = state["runs"][f"{e['trial']}/r0"]
            assert run["job"] in deletes and e["epochs"] < 9 and e["export_path"] is None
    best = [e for e in out.leaderboard if e["status"] == "succeeded"]
    values = [e["value"] for e in best]
    assert values == sorted(values, reverse=True) and values[0] == max(r.get("value") or 0 for r in state["runs"].values())
    assert sweep_exports(s.sweep_dir)[0] == (tmp_path / "pvc/models").resolve() / best[0]["name"] / "1"
    from serving.ensemble import resolve_members  # what `jobctl ensemble --sweep DIR --top 2` fuses

    for e in best:
        (Path(e["export_path"]) / "saved_model.pb").touch()
    assert resolve_members(s.sweep_dir, top=2) == [Path(e["export_path"]) for e in best[:2]]


def test_multi_worker_trials_run_as_jobsets_when_the_base_spec_asks(cluster, tmp_path):
    """distribution.backend: jobset in the base spec: every trial is a JobSet (never an Indexed Job), schema-valid,
    and its result is read back when the JobSet completes or fails."""
    from k8s import jobset
    from tests.support import crds
    from tests.support.jobset_controller import condition, set_status, stored_jobset, webhook_problems

    base = {**BASE, "distribution": {"backend": "jobset"}, "resources": {"workers": 2}}
    s = make_sweep(tmp_path, base=base, parameters={"training.learning_rate": [0.1, 0.01]})
    thread, box = start_in_thread(lambda: run_sweep(s, K8sBackend(s, cluster.client()), parallelism=2,
                                                    poll_seconds=0.05))
    # created suspended, resumed once its ConfigMap exists (as `jobctl submit` does): wait for both steps
    wait_for(lambda: [o["spec"].get("suspend") for o in cluster.objects(jobset.KIND)] == [False, False])
    assert jobs(cluster) == {}, "no Indexed Job beside the JobSets"
    for name, trial in (("lr-t000-r0", "t000"), ("lr-t001-r0", "t001")):
        js = stored_jobset(cluster, name)
        crds.validate(js)
        assert webhook_problems(js) == []
        assert js["metadata"]["labels"][common.LABEL_SWEEP] == "lr" and js["metadata"]["labels"][common.LABEL_TRIAL] == trial
        (rjob,) = js["spec"]["replicatedJobs"]
        assert rjob["template"]["spec"]["completions"] == 2
        assert js["spec"].get("suspend") is False
        assert any(c["metadata"]["name"] == spec_configmap_name(name) for c in cluster.objects("ConfigMap"))

    write_metrics(tmp_path, "lr-t000", 0.9)
    set_status(cluster, "lr-t000-r0", conditions=[condition("Completed", "AllJobsCompleted", "jobset completed")],
               terminalState="Completed")
    set_status(cluster, "lr-t001-r0", restarts=3, terminalState="Failed", conditions=[
        condition("Failed", "FailurePolicy", "jobset failed: reached max restarts")])
    thread.join(10)
    assert "error" not in box, box.get("error")
    assert box["result"].counts["succeeded"] == 1 and box["result"].counts["failed"] == 1
    board = read_json(s.sweep_dir / "leaderboard.json")
    assert [(e["trial"], e["status"]) for e in board] == [("t000", "succeeded"), ("t001", "failed")]
    assert "JobSet lr-t001-r0 failed: FailurePolicy: jobset failed: reached max restarts" in board[1]["error"]
