"""Sweeps on Optuna, with the fake trainer (tests/support/sweeps.py: jobs.train's contract in milliseconds): TPE with
ASHA prunes bad trials and resumes after an interrupt, Hyperband pauses at rungs and resumes promoted trials from
their backup, a trial killed mid-epoch is retried per the spec, one sweep process per directory, a torn journal,
GP, `results --plot`, and a CLI that does not import Optuna where it does not search."""

from __future__ import annotations

import _thread
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from sweeps.backends.local import LocalBackend
from sweeps.errors import SweepBusyError
from sweeps.leaderboard import sweep_exports
from sweeps.scheduler import SweepInterrupted, run_sweep
from sweeps.spec import load_sweep
from sweeps.state import read_json
from sweeps.study import journal_path, load_study_readonly
from tests.support.sweeps import make_fake_command, sweep_data

LR = {"training.learning_rate": {"min": 1e-4, "max": 1.0, "scale": "log"}}
NINE_EPOCHS = {"name": "tiny", "data": {"dataset": "digits"}, "model": {"type": "mlp"}, "training": {"epochs": 9}}


@pytest.fixture
def fake_command(tmp_path):
    return make_fake_command(tmp_path)


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def tpe_asha(tmp_path, **kw):
    return load_sweep(sweep_data(tmp_path, base=NINE_EPOCHS, parameters=LR, max_trials=8,
                                 algorithm={"type": "tpe", "seed": 0, "n_startup_trials": 3},
                                 pruner={"type": "asha", "min_epochs": 1, "reduction_factor": 3}, **kw))


def test_tpe_with_asha_prunes_resumes_after_an_interrupt_and_hands_the_best_to_the_ensemble(
        tmp_path, fake_command, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.15")
    s = tpe_asha(tmp_path)
    finished: list = []

    def interrupt_after_three(p):
        if p.kind in ("finished", "pruned"):
            finished.append(p.trial)
            if len(finished) == 3:
                _thread.interrupt_main()  # Ctrl-C with trials running

    with pytest.raises(SweepInterrupted):
        run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2, poll_seconds=0.05,
                  on_progress=interrupt_after_three)
    first = read_json(s.sweep_dir / "sweep.json")
    assert len(first["trials"]) < 8

    seen: list = []
    out = run_sweep(tpe_asha(tmp_path), LocalBackend(s, command=fake_command), parallelism=2, poll_seconds=0.05,
                    on_progress=seen.append)
    assert seen[0].kind == "resumed"
    counts = out.counts
    assert counts["total"] == 8 and counts["failed"] == 0 and counts["pending"] == counts["running"] == 0
    assert counts["pruned"] >= 1 and counts["succeeded"] >= 1
    assert counts["succeeded"] + counts["pruned"] == 8, "no trial lost across the interrupt"
    # Interrupted runs went on under their own Optuna trial: the study asked exactly max_trials.
    study = load_study_readonly(s.sweep_dir)
    assert states(study) == {"COMPLETE": counts["succeeded"], "PRUNED": counts["pruned"]}
    board = out.leaderboard
    for e in board:
        if e["status"] == "pruned":
            assert e["epochs"] < 9 and e["export_path"] is None and e["error"] is None
            run = read_json(s.sweep_dir / "sweep.json")["runs"][f"{e['trial']}/r{e['attempt']}"]
            assert run["pruned_at"] in (1, 3)  # ASHA's rungs: 1 and 3 epochs (reduction factor 3)
            history = json.loads((Path(run["run_dir"]) / "history.json").read_text())
            assert history["epochs"][-1] == e["epochs"]  # the epoch it reached, from its own history
    # Pruned trials rank after every succeeded one and never reach an ensemble.
    succeeded = [e for e in board if e["status"] == "succeeded"]
    assert board[: len(succeeded)] == succeeded
    assert sweep_exports(s.sweep_dir)[:2] == [Path(e["export_path"]) for e in succeeded[:2]]
    from serving.ensemble import resolve_members  # what `jobctl ensemble --sweep DIR --top 2` fuses

    assert resolve_members(s.sweep_dir, top=2) == [Path(e["export_path"]) for e in succeeded[:2]]
    # TPE learned: the best trial sits near the fake trainer's optimum (lr 0.01) far better than its worst.
    assert abs(succeeded[0]["params"]["training.learning_rate"] - 0.01) < 0.02


@pytest.mark.parametrize("warm_start", [True, False])
def test_hyperband_pauses_at_rungs_and_a_promoted_trial_continues_from_its_backup(
        tmp_path, fake_command, monkeypatch, warm_start):
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.05")
    s = load_sweep(sweep_data(tmp_path, base=NINE_EPOCHS, parameters=LR, max_trials=6,
                              algorithm={"type": "random", "seed": 1},
                              pruner={"type": "hyperband", "min_epochs": 1, "reduction_factor": 3,
                                      "warm_start": warm_start}))
    seen: list = []
    out = run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2, poll_seconds=0.05,
                    on_progress=seen.append)
    assert out.counts["failed"] == 0 and out.counts["succeeded"] + out.counts["pruned"] == 6
    runs = read_json(s.sweep_dir / "sweep.json")["runs"]
    promoted = [r for r in runs.values() if r.get("rungs") and r["status"] == "succeeded"]
    assert promoted, "some trial paused at a rung and was promoted"
    assert {p.kind for p in seen} >= {"paused", "promoted"}
    for r in promoted:
        metrics = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        history = json.loads((Path(r["run_dir"]) / "history.json").read_text())
        assert history["epochs"] == list(range(1, 10)), "every epoch once, the promoted part continuing the first"
        # Warm: the run resumed from its last rung's backup; cold: trained again from epoch 1.
        if warm_start:  # at its last rung, or an epoch later if the SIGTERM landed in the next one
            assert r["rungs"][-1] <= metrics["resumed_from"] <= r["rungs"][-1] + 1
        else:
            assert metrics["resumed_from"] == 0


@pytest.mark.parametrize("retries", [0, 1])
def test_a_trial_killed_mid_epoch_is_failed_with_its_last_epoch_and_retried_per_the_spec(
        tmp_path, fake_command, monkeypatch, retries):
    monkeypatch.setenv("FAKE_KILL_AT", "sw-t000/r0:3")  # SIGKILL in epoch 3 of t000's first attempt
    s = load_sweep(sweep_data(tmp_path, base=NINE_EPOCHS, parameters={"training.learning_rate": [0.01, 0.1]},
                              retries=retries))
    out = run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2, poll_seconds=0.05)
    runs = read_json(s.sweep_dir / "sweep.json")["runs"]
    first = runs["t000/r0"]
    assert first["status"] == "failed" and first["epoch"] == 2 and first["exit_code"] == -9
    assert "killed by a signal" in first["error"]
    t000 = next(e for e in out.leaderboard if e["trial"] == "t000")
    if retries:
        assert runs["t000/r1"]["status"] == "succeeded" and (t000["status"], t000["attempt"]) == ("succeeded", 1)
        assert out.counts["succeeded"] == 2
    else:
        assert "t000/r1" not in runs and (t000["status"], t000["epochs"]) == ("failed", 2)
        assert out.counts == {"succeeded": 1, "pruned": 0, "failed": 1, "running": 0, "paused": 0, "pending": 0,
                              "total": 2}


def test_a_second_sweep_process_on_the_same_directory_refuses_and_corrupts_nothing(
        tmp_path, fake_command, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "4")
    data = sweep_data(tmp_path, parameters={"training.learning_rate": [0.1, 0.01]})
    s = load_sweep(data)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(out=run_sweep(
        s, LocalBackend(s, command=fake_command), parallelism=2, poll_seconds=0.05)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    def both_started():
        try:
            return len(read_json(s.sweep_dir / "sweep.json")["runs"]) == 2
        except Exception:  # noqa: BLE001 - not written yet
            return False

    while not both_started():  # then nothing changes for the 3 s the fake trials sleep
        assert time.monotonic() < deadline
        time.sleep(0.02)
    before = (s.sweep_dir / "sweep.json").read_bytes()
    with pytest.raises(SweepBusyError, match="another jobctl sweep is running on this sweep directory"):
        run_sweep(load_sweep(data), LocalBackend(s, command=fake_command), parallelism=2)
    spec = tmp_path / "sweep.yaml"
    spec.write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["sweep", str(spec)])
    assert r.exit_code == 1 and "another jobctl sweep is running" in r.stderr and '"pid"' in r.stderr
    assert (s.sweep_dir / "sweep.json").read_bytes() == before
    thread.join(30)
    assert box["out"].counts["succeeded"] == 2


def test_a_journal_with_a_torn_last_line_reads_back_without_it(tmp_path, fake_command):
    def random_sweep(n):
        return load_sweep(sweep_data(tmp_path, parameters=LR, max_trials=n, algorithm={"type": "random", "seed": 2}))

    s = random_sweep(2)
    run_sweep(s, LocalBackend(s, command=fake_command), parallelism=2, poll_seconds=0.05)
    journal = journal_path(s.sweep_dir)
    with open(journal, "ab") as fh:  # the process died while appending an operation
        fh.write(b'{"op_code": 6, "worker_id": "x", "trial_id": 1, "sta')
    assert states(load_study_readonly(s.sweep_dir)) == {"COMPLETE": 2}  # Optuna reads around it...
    grown = random_sweep(3)
    out = run_sweep(grown, LocalBackend(grown, command=fake_command), parallelism=2, poll_seconds=0.05)
    assert out.counts["succeeded"] == 3
    # ...and the sweep cut it before appending, so the journal stays readable after more writes.
    assert journal.read_bytes().endswith(b"\n") and b'"sta\n' not in journal.read_bytes()
    assert states(load_study_readonly(s.sweep_dir)) == {"COMPLETE": 3}


def test_gp_searches_a_numeric_space(tmp_path, fake_command):
    pytest.importorskip("torch")  # the `gp` extra
    s = load_sweep(sweep_data(tmp_path, parameters={**LR, "model.dropout": [0.0, 0.5]}, max_trials=4,
                              algorithm={"type": "gp", "seed": 0, "n_startup_trials": 2}))
    out = run_sweep(s, LocalBackend(s, command=fake_command), parallelism=1, poll_seconds=0.05)
    assert out.counts["succeeded"] == 4
    assert states(load_study_readonly(s.sweep_dir)) == {"COMPLETE": 4}


def test_results_shows_pruned_trials_and_plot_adds_optunas_views(tmp_path, fake_command, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.1")
    # The median pruner lets its first 3 trials finish: the importance view has the 2 it needs, whatever the timing.
    s = load_sweep(sweep_data(tmp_path, base=NINE_EPOCHS, parameters={**LR, "model.dropout": [0.0, 0.5]},
                              max_trials=7, algorithm={"type": "tpe", "seed": 0, "n_startup_trials": 3},
                              pruner={"type": "median", "n_startup_trials": 3, "n_warmup_epochs": 1}))
    out = run_sweep(s, LocalBackend(s, command=fake_command), parallelism=1, poll_seconds=0.05)
    assert out.counts["pruned"] >= 1 and out.counts["succeeded"] >= 3
    runner = CliRunner()
    r = runner.invoke(app, ["results", str(s.sweep_dir), "--plot", str(tmp_path / "plots" / "lr.png")])
    assert r.exit_code == 0, r.output
    assert "pruned" in r.stdout
    for name in ("lr.png", "lr.importance.png", "lr.parallel.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG", name
    r = runner.invoke(app, ["best", str(s.sweep_dir), "--top", str(out.counts["succeeded"] + 1)])
    assert r.exit_code == 1 and f"only {out.counts['succeeded']} succeeded trials" in r.stderr


@pytest.mark.parametrize("args", [["--help"], ["results", "{sweep}"], ["best", "{sweep}"]])
def test_the_cli_imports_optuna_only_where_it_searches(tmp_path, args):
    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "leaderboard.json").write_text(json.dumps([{
        "rank": 1, "trial": "t000", "name": "sw-t000", "status": "succeeded", "params": {"model.dropout": 0.1},
        "objective": "best_val_accuracy", "direction": "max", "value": 0.9, "metrics": {}, "export_path": "/x/1"}]))
    code = ("import sys, json; from typer.testing import CliRunner; from cli.main import app; "
            f"r = CliRunner().invoke(app, {[a.format(sweep=sweep) for a in args]!r}); "
            "print(json.dumps([r.exit_code, 'optuna' in sys.modules, 'torch' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    exit_code, optuna_loaded, torch_loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert exit_code == 0 and not optuna_loaded and not torch_loaded


def test_cli_sweep_prints_pruned_trials_and_results_lists_them(tmp_path, monkeypatch, fake_command):
    import sweeps.backends.local as local

    monkeypatch.setattr(local, "train_command", fake_command)
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.7")  # the CLI polls every 0.5 s
    # Seed 3 draws lr 1.0, 0.1, 0.0001, 0.01; the third is below the median of the first two at epoch 1.
    data = sweep_data(tmp_path, base=dict(NINE_EPOCHS, training={"epochs": 4}), max_trials=4,
                      parameters={"training.learning_rate": [0.01, 1.0, 0.0001, 0.1]},
                      algorithm={"type": "random", "seed": 3}, pruner={"type": "median", "n_startup_trials": 1})
    (tmp_path / "sweep.yaml").write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--parallelism", "1"])
    assert r.exit_code == 0, r.output
    assert "t002 pruned at epoch" in r.stdout and "[4/4 done, 0 running, 0 failed, 1 pruned]" in r.stdout
    r = CliRunner().invoke(app, ["results", str(tmp_path / "sweep"), "--json"])
    board = json.loads(r.stdout)
    assert [(e["trial"], e["status"]) for e in board] == [
        ("t003", "succeeded"), ("t001", "succeeded"), ("t000", "succeeded"), ("t002", "pruned")]
    r = CliRunner().invoke(app, ["best", str(tmp_path / "sweep"), "--top", "3"])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3 and "sw-t002" not in r.stdout


def test_a_poll_that_arrives_epochs_late_judges_each_rung_on_the_value_at_that_rung(tmp_path):
    """A busy controller may first read a trial's history two epochs after ASHA's first rung. The trial must still
    compete at epoch 1 with its epoch-1 value, not with its better epoch-3 one: timing must not decide who is pruned."""
    from sweeps.state import SweepState
    from sweeps.trials import TrialBook

    s = tpe_asha(tmp_path)
    book = TrialBook(s, SweepState.open(s))
    early, late = book.propose(), book.propose()
    assert book.report_epochs(early, {"epochs": [1], "val_accuracy": [0.8]}) is None
    # epoch 1: 0.5 < 0.8 (pruned at rung 1); its epoch 3 (0.9) would have beaten the peer's 0.8
    assert book.report_epochs(late, {"epochs": [1, 2, 3], "val_accuracy": [0.5, 0.85, 0.9]}) == "pruned"
    study = load_study_readonly(s.sweep_dir)
    late_trial = study.trials[book.state.trials[late]["number"]]
    assert late_trial.intermediate_values == {1: 0.5}, "judged at its first rung; later epochs not reported"


def test_a_hyperband_trial_first_seen_past_its_rung_still_pauses_at_the_rung(tmp_path):
    from sweeps.state import SweepState
    from sweeps.trials import TrialBook

    s = load_sweep(sweep_data(tmp_path, base=NINE_EPOCHS, parameters=LR, max_trials=4,
                              algorithm={"type": "tpe", "seed": 0},
                              pruner={"type": "hyperband", "min_epochs": 1, "reduction_factor": 3}))
    book = TrialBook(s, SweepState.open(s))
    tid = book.propose()
    first = book.rungs(tid)[0]
    # the poll first reads the history an epoch past the first rung (not itself a rung: the next is 3x)
    history = {"epochs": list(range(1, first + 2)), "val_accuracy": [0.5] * (first + 1)}
    assert book.report_epochs(tid, history) == "paused"
    assert book.rung_reached[tid] == first
