"""Sweep specs and search algorithms: bad input fails before any trial runs; grid, random and Hyperband decide
the same way every time (Hyperband promotions are checked on given metrics, no training)."""

from __future__ import annotations

import pytest

from jobs.spec import SpecError
from sweeps.search import hyperband_plan, promote, run_key, walk
from sweeps.spec import load_sweep

BASE = {"name": "base", "data": {"dataset": "digits"}, "model": {"type": "mlp"}, "training": {"epochs": 9}}


def sweep(**kw) -> dict:
    out = {"name": "s", "base": BASE, "parameters": {"training.learning_rate": [0.1, 0.01]}}
    out.update(kw)
    return out


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_sweep(data)
    return info.value.problems


# ------------------------------------------------------------------------------------------- bad input
def test_unknown_field_path_is_named_with_a_suggestion():
    (p,) = problems(sweep(parameters={"training.learning_rat": [0.1]}))
    assert p.startswith("parameters.training.learning_rat: unknown job spec field")
    assert "did you mean 'training.learning_rate'" in p


def test_empty_ranges_and_choices_are_rejected():
    ps = problems(sweep(parameters={
        "training.batch_size": {"min": 64, "max": 16},
        "training.learning_rate": {"min": 0.1, "max": 0.1, "grid_points": 2},
        "model.dropout": [],
    }))
    assert any(p.startswith("parameters.training.batch_size") and "empty range" in p and "64" in p for p in ps)
    assert any(p.startswith("parameters.training.learning_rate") and "empty range" in p for p in ps)
    assert any(p.startswith("parameters.model.dropout") and "empty choice" in p for p in ps)
    assert len(ps) == 3


def test_values_the_job_spec_rejects_are_named_with_the_spec_message():
    ps = problems(sweep(parameters={
        "model.dropout": [0.2, 1.5],
        "training.learning_rate": {"min": 0.001, "max": 20.0, "scale": "log"},
        "training.optimizer": ["adam", "lbfgs"],
    }))
    assert any(p.startswith("parameters.model.dropout: value 1.5 is rejected") and "less than 1" in p for p in ps)
    assert any(p.startswith("parameters.training.learning_rate: value 20.0 is rejected") for p in ps)
    assert any(p.startswith("parameters.training.optimizer: value 'lbfgs' is rejected") and "'adam'" in p for p in ps)


def test_grid_larger_than_max_trials_says_how_large():
    (p,) = problems(sweep(max_trials=3, parameters={"training.learning_rate": [0.1, 0.01], "model.dropout": [0.0, 0.5]}))
    assert p.startswith("max_trials: the grid has 4 trials") and "received max_trials 3" in p


def test_float_range_in_a_grid_needs_grid_points_and_log_needs_positive_min():
    ps = problems(sweep(parameters={"training.learning_rate": {"min": 0.0, "max": 0.1, "scale": "log"}}))
    assert any("log scale needs min > 0" in p for p in ps)
    with pytest.raises((SpecError, ValueError), match="grid_points"):
        load_sweep(sweep(parameters={"training.learning_rate": {"min": 0.001, "max": 0.1}}))


def test_hyperband_rejects_epochs_as_a_parameter_and_a_too_small_max_trials():
    (p,) = problems(sweep(algorithm={"type": "hyperband"}, parameters={"training.epochs": [1, 2]}))
    assert "hyperband uses epochs as its budget" in p
    (p,) = problems(sweep(algorithm={"type": "hyperband", "max_epochs": 9}, max_trials=5))
    assert "samples 17 configurations" in p


def test_random_search_over_a_space_smaller_than_max_trials():
    (p,) = problems(sweep(algorithm={"type": "random"}, max_trials=5, parameters={"model.dropout": [0.0, 0.5]}))
    assert "only 2 distinct configurations" in p


def test_sweep_names_reserved_fields_and_unknown_keys():
    ps = problems({"name": "Bad_Name", "base": BASE, "parameters": {"name": ["a"]}, "paralelism": 2})
    assert any(p.startswith("name:") for p in ps)
    assert any(p.startswith("paralelism: unknown field") and "parallelism" in p for p in ps)
    ps = problems(sweep(parameters={"export.model_name": ["a", "b"]}))
    assert "each trial has its own name" in ps[0]


# ------------------------------------------------------------------------------------- every problem at once
def test_a_bad_objective_does_not_hide_the_parameter_problems():
    ps = problems(sweep(objective={"metric": "best_val_acc"}, parameters={
        "training.learnin_rate": [0.1],
        "training.batch_size": {"min": 9, "max": 3},
        "model.dropout": [0.1, 2.0],
    }))
    assert [p.split(":")[0] for p in ps] == [
        "objective.metric", "parameters.training.learnin_rate", "parameters.training.batch_size.max",
        "parameters.model.dropout",
    ]
    assert "received 'best_val_acc'" in ps[0] and "value 2.0 is rejected" in ps[3]


def test_field_errors_log_ranges_and_missing_grid_points_come_out_together():
    # The walkthrough's spec took three runs: the fields, then the log scale, then grid_points.
    ps = problems(sweep(algorithm={"type": "grid", "seed": -1}, max_trials=0, parallelism=0, parameters={
        "training.learning_rate": {"min": 0.0, "max": 0.1, "scale": "log"},
        "model.dropout": {"min": 0.0, "max": 0.5},
    }))
    assert [p.split(":")[0] for p in ps] == [
        "algorithm.seed", "max_trials", "parallelism", "parameters.training.learning_rate.scale",
        "parameters.training.learning_rate.grid_points", "parameters.model.dropout.grid_points",
    ]
    assert "log scale needs min > 0, received min 0.0" in ps[3] and "received none" in ps[5]


def test_a_range_reports_each_of_its_problems():
    ps = problems(sweep(algorithm={"type": "random"}, parameters={
        "training.learning_rate": {"min": 0.0, "max": -1.0, "scale": "log", "grid_points": 1},
        "training.batch_size": {"min": 0, "max": 64, "scale": "log", "stepp": 2},
    }))
    assert [p.split(":")[0] for p in ps] == [
        "parameters.training.learning_rate.max", "parameters.training.learning_rate.scale",
        "parameters.training.learning_rate.grid_points", "parameters.training.batch_size.scale",
        "parameters.training.batch_size.stepp",
    ]
    assert "empty range: received min 0.0 > max -1.0" in ps[0] and "expected greater than or equal to 2" in ps[2]
    assert "log scale needs min >= 1" in ps[3] and "did you mean 'step'" in ps[4]


def test_hyperband_problems_come_with_the_others():
    ps = problems(sweep(objective={"metric": "acc"}, algorithm={"type": "hyperband", "max_epochs": 9}, max_trials=5,
                        parameters={"training.epochs": [1, 2]}))
    assert [p.split(":")[0] for p in ps] == ["objective.metric", "parameters.training.epochs", "max_trials"]
    assert "samples 17 configurations" in ps[2]


# ------------------------------------------------------------------------------------------- good input
def test_grid_enumerates_every_combination_with_readable_values(tmp_path):
    s = load_sweep(sweep(parameters={
        "training.learning_rate": {"min": 0.001, "max": 0.1, "scale": "log", "grid_points": 3},
        "training.batch_size": {"min": 16, "max": 48, "step": 16},
        "training.optimizer": ["adam", "sgd"],
    }))
    assert len(s.trials) == 3 * 3 * 2
    assert sorted({t.params["training.learning_rate"] for t in s.trials}) == [0.001, 0.01, 0.1]
    assert sorted({t.params["training.batch_size"] for t in s.trials}) == [16, 32, 48]
    assert [t.id for t in s.trials][:2] == ["t000", "t001"]
    spec = s.trial_job_spec(s.trials[5])
    # Own names per trial: run directories and exports never collide; labels tie the trial to its sweep.
    assert spec.name == "s-t005" and spec.model_name == "s-t005"
    assert spec.labels == {"jobctl.io/sweep": "s", "jobctl.io/trial": "t005"}


def test_random_search_is_seeded_and_in_range():
    params = {"training.learning_rate": {"min": 1e-4, "max": 1e-1, "scale": "log"},
              "model.dense_units": [[32], [64, 32]], "training.batch_size": {"min": 8, "max": 64}}
    a = load_sweep(sweep(algorithm={"type": "random", "seed": 7}, max_trials=6, parameters=params))
    b = load_sweep(sweep(algorithm={"type": "random", "seed": 7}, max_trials=6, parameters=params))
    c = load_sweep(sweep(algorithm={"type": "random", "seed": 8}, max_trials=6, parameters=params))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]
    for t in a.trials:
        assert 1e-4 <= t.params["training.learning_rate"] <= 1e-1
        assert 8 <= t.params["training.batch_size"] <= 64
        assert t.params["model.dense_units"] in ([32], [64, 32])


def test_yaml_style_exponent_strings_become_numbers(tmp_path):
    (tmp_path / "base.yaml").write_text("name: b\nmodel: {type: mlp}\n")
    (tmp_path / "sweep.yaml").write_text(
        "name: s\nbase: base.yaml\nfixed: {training.epochs: 2}\n"
        "parameters:\n  training.learning_rate: [1e-3, 1e-2]\n"
    )
    s = load_sweep(tmp_path / "sweep.yaml")
    assert [t.params["training.learning_rate"] for t in s.trials] == [0.001, 0.01]
    assert s.trial_job_spec(s.trials[0]).training.epochs == 2


# ------------------------------------------------------------------------------------------- hyperband
def test_hyperband_plan_matches_the_paper():
    plan = hyperband_plan(1, 9, 3)  # Li et al. Table 1 with R=9, eta=3 (budgets in epochs)
    assert [(b.n_configs, [(r.n, r.epochs) for r in b.rungs]) for b in plan] == [
        (9, [(9, 1), (3, 3), (1, 9)]),
        (5, [(5, 3), (1, 9)]),
        (3, [(3, 9)]),
    ]
    assert [r.epochs for b in hyperband_plan(2, 8, 2) for r in b.rungs][:4] == [2, 4, 8, 4]


def test_promote_takes_the_best_and_never_a_failure():
    values = {"t0": 0.5, "t1": 0.9, "t2": None, "t3": 0.9, "t4": float("nan"), "t5": 0.7}
    assert promote(values, 2, "max") == ["t1", "t3"]  # tie -> lower id first
    assert promote(values, 3, "min") == ["t0", "t5", "t1"]
    assert promote({"t0": None, "t1": 0.2}, 2, "max") == ["t1"]


def _hb(max_trials=None):
    return load_sweep(sweep(algorithm={"type": "hyperband", "min_epochs": 1, "max_epochs": 9, "eta": 3, "seed": 1},
                            parameters={"training.learning_rate": {"min": 1e-4, "max": 1e-1, "scale": "log"}}))


def _finish(runs, trial, rung, value, status="succeeded"):
    runs[run_key(trial, rung)] = {"status": status, "value": value if status == "succeeded" else None}


def test_hyperband_promotes_the_best_third_and_stops_the_rest():
    s = _hb()
    bracket0 = [t.id for t in s.trials if t.bracket == 0]
    assert len(bracket0) == 9 and len(s.trials) == 17
    runs: dict = {}
    reqs, _ = walk(s, runs)
    # Every bracket starts at once (they are independent): 9 at 1 epoch, 5 at 3, 3 at 9.
    assert sorted((r.epochs, r.rung) for r in reqs) == [(1, 0)] * 9 + [(3, 0)] * 5 + [(9, 0)] * 3
    scores = dict(zip(bracket0, [0.1, 0.8, 0.3, 0.95, 0.2, 0.7, 0.4, 0.6, 0.5]))
    for t in bracket0[:8]:
        _finish(runs, t, 0, scores[t])
    reqs, states = walk(s, runs)
    assert not [r for r in reqs if r.trial in bracket0 and r.rung == 1], "no promotion before the rung completes"
    assert states[bracket0[3]]["status"] == "pending", "finished a rung, not the trial"
    _finish(runs, bracket0[8], 0, None, status="failed")
    reqs, states = walk(s, runs)
    promoted = sorted(r.trial for r in reqs if r.trial in bracket0)
    assert promoted == sorted([bracket0[3], bracket0[1], bracket0[5]])  # 0.95, 0.8, 0.7
    assert all(r.epochs == 3 and r.rung == 1 for r in reqs if r.trial in bracket0)
    assert states[bracket0[0]]["status"] == "stopped" and states[bracket0[8]]["status"] == "failed"
    assert states[bracket0[3]]["status"] == "pending"
    # Rung 1: 3 trials at 3 epochs -> 1 trial at 9 epochs, chosen by the rung-1 values, not rung 0's.
    for t, v in ((bracket0[3], 0.5), (bracket0[1], 0.9), (bracket0[5], 0.6)):
        _finish(runs, t, 1, v)
    reqs, states = walk(s, runs)
    assert [(r.trial, r.rung, r.epochs) for r in reqs if r.trial in bracket0] == [(bracket0[1], 2, 9)]
    assert states[bracket0[3]]["status"] == "stopped"
    _finish(runs, bracket0[1], 2, 0.97)
    _, states = walk(s, runs)
    assert states[bracket0[1]]["status"] == "succeeded"
    assert sum(1 for t in bracket0 if states[t]["status"] == "stopped") == 7


def test_hyperband_promotes_by_direction_min():
    s = load_sweep(sweep(algorithm={"type": "hyperband", "min_epochs": 1, "max_epochs": 3, "eta": 3},
                         objective={"metric": "best_val_loss"},
                         parameters={"training.learning_rate": {"min": 1e-4, "max": 1e-1, "scale": "log"}}))
    b0 = [t.id for t in s.trials if t.bracket == 0]
    assert len(b0) == 3
    runs: dict = {}
    for t, v in zip(b0, [0.3, 0.1, 0.2]):
        _finish(runs, t, 0, v)
    reqs, _ = walk(s, runs)
    assert [(r.trial, r.epochs) for r in reqs if r.trial in b0] == [(b0[1], 3)]


def test_combinations_are_judged_on_the_trials_not_value_by_value():
    # nesterov=True alone on an adam base is invalid, but every trial pairs it with sgd: a valid sweep.
    s = load_sweep(sweep(parameters={"training.optimizer": ["sgd"], "training.nesterov": [True, False]}))
    assert len(s.trials) == 2
    # Here one combination is invalid: only that trial is named, with its parameters.
    ps = problems(sweep(parameters={"training.optimizer": ["sgd", "adam"], "training.nesterov": [True]}))
    assert ps == ["trial t001 (training.optimizer='adam', training.nesterov=True): training: nesterov applies to "
                  "optimizer 'sgd' only, received optimizer 'adam'"]
    # A mistake in the base itself is reported once, not once per trial.
    base = dict(BASE, data={"dataset": "image_folder"})
    assert problems(sweep(base=base, parameters={"training.learning_rate": [0.1, 0.2, 0.3]})) == [
        "base: data: dataset 'image_folder' needs data.path (the folder to read)"]
