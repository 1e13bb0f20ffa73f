"""Local sweeps: real digits trials ranked right, resume skips finished trials, a failing trial is recorded with its
error while the others complete, Ctrl-C leaves a resumable state, Hyperband records stopped trials; and the
`jobctl sweep / results / best` commands on top."""

from __future__ import annotations

import _thread
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from sweeps.backends.local import LocalBackend
from sweeps.errors import SweepError
from sweeps.state import read_json
from sweeps.scheduler import SweepInterrupted, run_sweep
from sweeps.spec import load_sweep

from tests.support.sweeps import FAKE_TRAINER, TINY, make_fake_command, sweep_data


@pytest.fixture
def fake_command(tmp_path):
    return make_fake_command(tmp_path)


# ------------------------------------------------------------------------------------------ real training
REAL_PARAMS = {"model.kernel_size": [1, 2, 3, 5, 9]}
# One conv layer of 8 filters with 'valid' padding on 8x8 digits: kernel 9 is a value the spec accepts and Keras
# cannot build, so this one sweep shows both ranking and a trial failing while the others complete.
REAL_BASE = dict(TINY, model={"type": "cnn", "conv_filters": [8], "dense_units": [16]})


@pytest.mark.slow
def test_real_digits_sweep_ranks_trials_records_a_failure_and_resume_skips_them(tmp_path):
    s = load_sweep(sweep_data(tmp_path, base=REAL_BASE, parameters=REAL_PARAMS))
    seen: list = []
    t0 = time.monotonic()
    out = run_sweep(s, LocalBackend(s, parallelism=2), parallelism=2, on_progress=seen.append)
    took = time.monotonic() - t0
    assert out.counts == {"succeeded": 4, "pruned": 0, "failed": 1, "running": 0, "paused": 0, "pending": 0, "total": 5}
    board = read_json(s.sweep_dir / "leaderboard.json")
    assert [e["rank"] for e in board] == [1, 2, 3, 4, 5]
    # Ranked by the objective as each trial's own metrics.json reports it, best first; the failure last.
    reported = {}
    for e in board[:4]:
        metrics = read_json(Path(e["run_dir"]) / "metrics.json")
        reported[e["trial"]] = metrics["best_val_accuracy"]
        assert e["value"] == metrics["best_val_accuracy"] and e["status"] == "succeeded"
        assert Path(e["export_path"], "saved_model.pb").is_file()
        assert Path(e["export_path"]).is_absolute()
    assert [e["trial"] for e in board[:4]] == sorted(reported, key=lambda t: (-reported[t], t))
    assert len({e["export_path"] for e in board[:4]}) == 4

    failed = board[4]
    assert (failed["trial"], failed["status"], failed["params"]) == ("t004", "failed", {"model.kernel_size": 9})
    assert failed["error"].startswith("exit code 2") and failed["export_path"] is None
    assert "Computed output size would be zero or negative" in failed["error"]
    state = read_json(s.sweep_dir / "sweep.json")
    assert state["runs"]["t004/r0"]["exit_code"] == 2
    assert "error:" in Path(state["runs"]["t004/r0"]["log"]).read_text()
    # Parallelism 2: two trials overlapped, never three.
    assert max(p.counts["running"] for p in seen) == 2

    # The ensemble reads the same leaderboard: best first, export paths.
    from serving.ensemble import resolve_members

    assert [str(p) for p in resolve_members(s.sweep_dir, top=2)] == [e["export_path"] for e in board[:2]]

    # Resume: nothing runs again (the failure is a result too, not something to retry).
    mtimes = {e["trial"]: (Path(e["run_dir"]) / "metrics.json").stat().st_mtime_ns for e in board}
    seen2: list = []
    again = load_sweep(sweep_data(tmp_path, base=REAL_BASE, parameters=REAL_PARAMS))
    out2 = run_sweep(again, LocalBackend(again, parallelism=2), parallelism=2, on_progress=seen2.append)
    assert [p.kind for p in seen2] == ["resumed", "done"] and seen2[0].skipped == 5
    assert out2.counts["succeeded"] == 4
    assert {e["trial"]: (Path(e["run_dir"]) / "metrics.json").stat().st_mtime_ns for e in board} == mtimes
    print(f"5 real trials, parallelism 2: {took:.1f}s")


# -------------------------------------------------------------------------------------------- fake trainer
def test_ctrl_c_stops_trials_and_the_same_sweep_resumes(tmp_path, fake_command, monkeypatch):
    data = sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01, 0.001, 0.0001]})
    s = load_sweep(data)
    monkeypatch.setenv("FAKE_SLEEP", "30")
    backend = LocalBackend(s, command=fake_command, parallelism=2, stop_timeout=5)
    seen: list = []

    def interrupt_when_two_run():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(backend.procs) < 2:
            time.sleep(0.05)
        _thread.interrupt_main()  # what Ctrl-C does to the sweep process

    threading.Thread(target=interrupt_when_two_run, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(SweepInterrupted) as info:
        run_sweep(s, backend, parallelism=2, on_progress=seen.append)
    assert time.monotonic() - t0 < 15, "Ctrl-C must not wait for the trials to finish"
    assert info.value.outcome.interrupted and seen[-1].kind == "interrupted"
    pids = [rec["pid"] for rec in read_json(s.sweep_dir / "sweep.json")["runs"].values()]
    state = read_json(s.sweep_dir / "sweep.json")
    assert sorted(state["runs"]) == ["t000/r0", "t001/r0"]
    assert {r["status"] for r in state["runs"].values()} == {"interrupted"}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not backend.procs

    monkeypatch.setenv("FAKE_SLEEP", "0")
    seen2: list = []
    out = run_sweep(load_sweep(data), LocalBackend(s, command=fake_command, parallelism=2), parallelism=2,
                    on_progress=seen2.append)
    assert (seen2[0].kind, seen2[0].skipped, seen2[0].rerun) == ("resumed", 0, 2)
    assert out.counts["succeeded"] == 4
    assert out.best["trial"] == "t001"  # lr 0.01 scores best in the fake trainer


def test_a_crashing_sweep_leaves_no_trial_behind(tmp_path, fake_command, monkeypatch):
    s = load_sweep(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01, 0.001]}))
    monkeypatch.setenv("FAKE_SLEEP", "30")

    class Crash(Exception):
        pass

    def crash(p):
        if p.kind == "started" and p.counts["running"] == 2:
            raise Crash()

    with pytest.raises(Crash):
        run_sweep(s, LocalBackend(s, command=fake_command, stop_timeout=5), parallelism=2, on_progress=crash)
    runs = read_json(s.sweep_dir / "sweep.json")["runs"]
    assert {r["status"] for r in runs.values()} == {"interrupted"} and len(runs) == 2
    for r in runs.values():
        with pytest.raises(ProcessLookupError):
            os.kill(r["pid"], 0)


def test_a_trial_past_its_timeout_is_stopped_and_recorded_failed_while_the_others_finish(tmp_path):
    data = sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01]}, trial_timeout_seconds=2)
    s = load_sweep(data)
    assert s.trial_job_spec(s.trials[0]).resources.active_deadline_seconds == 2  # what a Kubernetes trial gets
    # The first trial sleeps 60 s and ignores SIGTERM; the second is quick.
    slow = tmp_path / "slow.py"
    slow.write_text("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                    "spec = open(sys.argv[sys.argv.index('--spec') + 1]).read()\n"
                    "time.sleep(60 if 'learning_rate: 0.1\\n' in spec else 0)\n" + FAKE_TRAINER)

    def command(spec, artifacts, run_id):
        return [sys.executable, str(slow), "--spec", str(spec), "--artifacts-dir", str(artifacts), "--run-id", run_id]

    t0 = time.monotonic()
    out = run_sweep(s, LocalBackend(s, command=command, stop_timeout=1), parallelism=2)
    assert time.monotonic() - t0 < 30, "the timed-out trial must be killed, not waited for"
    assert (out.counts["succeeded"], out.counts["failed"]) == (1, 1)
    failed = next(e for e in out.leaderboard if e["status"] == "failed")
    assert failed["trial"] == "t000" and "timed out: still running after 2 s" in failed["error"]
    runs = read_json(s.sweep_dir / "sweep.json")["runs"]
    with pytest.raises(ProcessLookupError):
        os.kill(runs["t000/r0"]["pid"], 0)
    # Final, like a Job past its deadline: resuming the sweep does not run it again.
    again = run_sweep(load_sweep(data), LocalBackend(s, command=command), parallelism=2)
    assert (again.counts["succeeded"], again.counts["failed"]) == (1, 1)


def test_fake_failure_has_its_error_and_others_complete(tmp_path, fake_command):
    s = load_sweep(sweep_data(tmp_path, parameters={"model.dropout": [0.0, 0.9, 0.5]}))
    out = run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2)
    assert (out.counts["succeeded"], out.counts["failed"]) == (2, 1)
    failed = [e for e in out.leaderboard if e["status"] == "failed"]
    assert failed[0]["trial"] == "t001" and failed[0]["rank"] == 3
    assert failed[0]["error"] == "exit code 1 (training failed): FloatingPointError: loss is NaN"


def test_resume_refuses_a_changed_sweep(tmp_path, fake_command):
    s = load_sweep(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01]}))
    run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2)
    changed = load_sweep(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.02]}))
    with pytest.raises(SweepError, match="--restart"):
        run_sweep(changed, LocalBackend(changed, command=fake_command), parallelism=2)
    out = run_sweep(changed, LocalBackend(changed, command=fake_command), parallelism=2, restart=True)
    assert out.counts["succeeded"] == 2


def test_a_random_sweep_can_grow_but_not_change(tmp_path, fake_command):
    def random_sweep(n, seed=5):
        return load_sweep(sweep_data(tmp_path, algorithm={"type": "random", "seed": seed}, max_trials=n,
                                     parameters={"training.learning_rate": {"min": 1e-4, "max": 1e-1, "scale": "log"}}))

    first = random_sweep(2)
    run_sweep(first, LocalBackend(first, command=fake_command), parallelism=2)
    grown = random_sweep(4)
    assert [t.params for t in grown.trials[:2]] == [t.params for t in first.trials]
    seen: list = []
    out = run_sweep(grown, LocalBackend(grown, command=fake_command), parallelism=2, on_progress=seen.append)
    assert seen[0].skipped == 2 and sorted(p.trial for p in seen if p.kind == "started") == ["t002", "t003"]
    assert out.counts["succeeded"] == 4 and len(out.leaderboard) == 4
    reseeded = random_sweep(4, seed=6)
    with pytest.raises(SweepError, match="holds a different sweep"):
        run_sweep(reseeded, LocalBackend(reseeded, command=fake_command), parallelism=2)


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_results_and_best(tmp_path, fake_command):
    s = load_sweep(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01, 0.001],
                                                    "model.dropout": [0.0, 0.9]}))
    run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2)
    runner = CliRunner()
    r = runner.invoke(app, ["results", str(s.sweep_dir), "--json"])
    assert r.exit_code == 0, r.output
    board = json.loads(r.stdout)
    assert [e["trial"] for e in board][:3] == ["t002", "t000", "t004"]  # lr 0.01, then 0.1 and 0.001 (tie by id)
    assert (s.sweep_dir / "objective.png").read_bytes()[:4] == b"\x89PNG"

    r = runner.invoke(app, ["results", str(s.sweep_dir), "--metric", "best_val_loss"])
    assert r.exit_code == 0 and (s.sweep_dir / "best_val_loss.png").read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(app, ["results", str(s.sweep_dir), "--metric", "nope"])
    assert r.exit_code == 2 and "--metric nope" in r.stderr

    r = runner.invoke(app, ["results", str(s.sweep_dir), "--csv", "--no-plot"])
    lines = r.stdout.splitlines()
    assert lines[0].startswith("rank,trial,status,objective,value,training.learning_rate,model.dropout")
    assert len(lines) == 7 and lines[1].split(",")[1] == "t002" and ",failed," in lines[-1]

    r = runner.invoke(app, ["best", str(s.sweep_dir), "--top", "2"])
    assert r.exit_code == 0 and r.stdout.splitlines() == [board[0]["export_path"], board[1]["export_path"]]
    r = runner.invoke(app, ["best", str(s.sweep_dir), "--top", "2", "--json"])
    assert [e["trial"] for e in json.loads(r.stdout)] == ["t002", "t000"]
    r = runner.invoke(app, ["best", str(s.sweep_dir), "--top", "4"])
    assert r.exit_code == 1 and "only 3 succeeded trials" in r.stderr
    r = runner.invoke(app, ["results", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "not a sweep directory" in r.stderr


def test_cli_results_argument_errors_exit_2_and_output_paths_are_checked(tmp_path, fake_command):
    s = load_sweep(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01]}))
    run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2)
    runner = CliRunner()
    d = str(s.sweep_dir)

    def invoke(*args):
        r = runner.invoke(app, list(args))
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception  # never a traceback
        return r

    r = invoke("results", d, "--metric", "bogus")
    assert r.exit_code == 2 and "--metric bogus" in r.stderr and "test_loss" in r.stderr
    r = invoke("results", d, "--metric", "test_loss")  # a metrics.json key the fake trainer never writes
    assert r.exit_code == 2 and "no finished trial of this sweep reports it" in r.stderr and "best_val_loss" in r.stderr
    r = invoke("best", d, "--top", "0")
    assert r.exit_code == 2

    a_file = tmp_path / "spec.yaml"
    a_file.write_text("name: x\n")
    r = invoke("results", d, "--plot", str(a_file / "x.png"))
    assert r.exit_code == 2 and f"--plot {a_file / 'x.png'}: {a_file} is a file, not a directory" in r.stderr
    r = invoke("results", d, "--plot", str(tmp_path))
    assert r.exit_code == 2 and "is a directory; expected a file path" in r.stderr
    r = invoke("results", d, "--plot", str(tmp_path / "new" / "dir" / "lr.png"))
    assert r.exit_code == 0 and (tmp_path / "new" / "dir" / "lr.png").read_bytes()[:4] == b"\x89PNG"

    # --json and --csv print to stdout: a directory after them is an extra argument, or not a sweep.
    r = invoke("results", d, "--csv", str(tmp_path))
    assert r.exit_code == 2
    r = invoke("results", "--json", str(tmp_path))
    assert r.exit_code == 2 and "not a sweep directory" in r.stderr


def test_cli_dry_run_refuses_a_directory_holding_a_different_sweep_as_the_run_does(tmp_path, fake_command, monkeypatch):
    import sweeps.backends.local as local

    monkeypatch.setattr(local, "train_command", fake_command)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(json.dumps(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01]})))
    runner = CliRunner()
    assert runner.invoke(app, ["sweep", str(spec)]).exit_code == 0
    state = (tmp_path / "sweep" / "sweep.json").read_bytes()
    r = runner.invoke(app, ["sweep", str(spec), "--dry-run"])  # the same sweep: resumable, listed
    assert r.exit_code == 0 and "t001: training.learning_rate=0.01" in r.stdout

    spec.write_text(json.dumps(sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.02]})))
    dry = runner.invoke(app, ["sweep", str(spec), "--dry-run"])
    assert dry.exit_code == 2 and "holds a different sweep" in dry.stderr and "--restart" in dry.stderr
    assert "t001:" not in dry.stdout
    real = runner.invoke(app, ["sweep", str(spec)])
    assert real.exit_code == 2 and real.stderr == dry.stderr
    r = runner.invoke(app, ["sweep", str(spec), "--dry-run", "--restart"])
    assert r.exit_code == 0 and "t001: training.learning_rate=0.02" in r.stdout
    assert (tmp_path / "sweep" / "sweep.json").read_bytes() == state  # dry runs write nothing


def test_cli_sweep_rejects_bad_input_before_any_trial_runs(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\nmodel: {type: mlp}\n")
    (tmp_path / "sweep.yaml").write_text(
        "name: bad\nbase: base.yaml\nsweep_dir: out\nparameters:\n"
        "  model.dropout: [0.1, 2.0]\n  training.learnin_rate: [0.1]\n  training.batch_size: {min: 9, max: 3}\n"
    )
    r = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml")])
    assert r.exit_code == 2
    assert "3 problems" in r.stderr
    assert "parameters.model.dropout: value 2.0 is rejected by the job spec" in r.stderr
    assert "parameters.training.learnin_rate: unknown job spec field" in r.stderr
    assert "empty range" in r.stderr
    assert not (tmp_path / "out").exists() and not Path("out").exists()


def test_cli_sweep_runs_and_reports_progress(tmp_path, monkeypatch, fake_command):
    import sweeps.backends.local as local

    monkeypatch.setattr(local, "train_command", fake_command)
    (tmp_path / "sweep.yaml").write_text(json.dumps(sweep_data(tmp_path, parameters={"model.dropout": [0.0, 0.9]})))
    r = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--parallelism", "1"])
    assert r.exit_code == 0, r.output
    assert "t000 started" in r.stdout and "t001 failed" in r.stdout and "sweep finished" in r.stdout
    assert "[2/2 done, 0 running, 1 failed]" in r.stdout and "best t000 best_val_accuracy" in r.stdout


@pytest.mark.slow
def test_real_hyperband_promoted_trial_continues_its_history_from_the_rung_backup(tmp_path):
    # Epochs of ~700 small steps (about a second each): long enough that the scheduler, polling every 0.1 s, sees
    # the rung's epoch and pauses the run before it trains to the end (with 300 examples in batches of 32, an epoch
    # took milliseconds and a loaded machine could let the run finish first).
    base = dict(TINY, data={"dataset": "digits", "max_train_examples": 1400}, training={"epochs": 3, "batch_size": 2})
    s = load_sweep(sweep_data(tmp_path, base=base, parameters={"training.learning_rate": [0.01, 0.003]},
                              algorithm={"type": "random", "seed": 0}, max_trials=2,
                              pruner={"type": "hyperband", "min_epochs": 1, "reduction_factor": 3}))
    at_pause: dict = {}

    def keep_history(p):
        if p.kind == "paused":
            run = read_json(s.sweep_dir / "sweep.json")["runs"][f"{p.trial}/r0"]
            at_pause[p.trial] = json.loads((Path(run["run_dir"]) / "history.json").read_text())

    out = run_sweep(s, LocalBackend(s, parallelism=1), parallelism=1, poll_seconds=0.1, on_progress=keep_history)
    assert out.counts["failed"] == 0 and at_pause, "a trial paused at its rung (epoch 1)"
    state = read_json(s.sweep_dir / "sweep.json")
    for trial, before in at_pause.items():
        run = state["runs"][f"{trial}/r0"]
        if run["status"] != "succeeded":
            continue  # pruned at its rung
        after = json.loads((Path(run["run_dir"]) / "history.json").read_text())
        n = len(before["epochs"])
        # The promoted run's first epoch is epoch n+1 of the same history: epochs 1..n kept as they were...
        assert after["epochs"] == [1, 2, 3] and after["loss"][:n] == before["loss"][:n]
        # ...because Keras restored the weights and the optimizer from the rung's backup, not from scratch.
        assert f"resumed: epochs 1-{n} restored from" in Path(run["log"]).read_text()
        assert after["loss"][n] < after["loss"][0]
        break
    else:
        pytest.fail("no paused trial was promoted")
