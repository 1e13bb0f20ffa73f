"""Sweep specs: bad input fails before any trial runs, every problem at once; grid and random plan the same trials
every time; the algorithm, the pruner and the space are checked against each other."""

from __future__ import annotations

import pytest

from jobs.spec import SpecError
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


def test_a_pruner_rejects_epochs_as_a_parameter_and_hyperband_is_a_pruner_now():
    ps = problems(sweep(algorithm={"type": "tpe"}, pruner={"type": "asha"}, parameters={"training.epochs": [1, 2]}))
    assert any(p.startswith("parameters.training.epochs: the pruner uses epochs as its budget") for p in ps)
    (p,) = problems(sweep(algorithm={"type": "hyperband"}))
    assert p.startswith("algorithm.type: received 'hyperband', which is a pruner now")
    assert "pruner: {type: hyperband" in p


def test_a_pruner_with_a_grid_means_nothing():
    (p,) = problems(sweep(pruner={"type": "median"}))
    assert p.startswith("pruner: received median with algorithm grid, where it means nothing")
    assert "algorithm random, tpe or gp" in p


def test_a_pruner_needs_an_objective_recorded_every_epoch():
    (p,) = problems(sweep(algorithm={"type": "tpe"}, pruner={"type": "asha"}, objective={"metric": "test_accuracy"}))
    assert p.startswith("pruner: judges trials epoch by epoch on val_accuracy or val_loss")
    assert "received" not in p or "test_accuracy" in p


def test_gp_over_a_categorical_only_space_is_refused():
    (p,) = problems(sweep(algorithm={"type": "gp"}, parameters={"training.learning_rate": [0.1, 0.01],
                                                                "training.optimizer": ["adam", "sgd"]}))
    assert p.startswith("algorithm.type: gp models numeric ranges with a Gaussian process, but every parameter is a "
                        "choice (training.learning_rate, training.optimizer)")
    assert "algorithm tpe" in p


def test_gp_without_torch_says_why_and_what_to_install(monkeypatch):
    import sweeps.study

    monkeypatch.setattr(sweeps.study, "torch_available", lambda: False)
    (p,) = problems(sweep(algorithm={"type": "gp"}, parameters={"training.learning_rate": {"min": 1e-4, "max": 1e-1}}))
    assert "needs PyTorch" in p and "pip install 'jobctl[gp]'" in p


@pytest.mark.parametrize("pruner, expected", [
    ({"type": "median", "n_startup_trials": -1}, "pruner.median.n_startup_trials"),
    ({"type": "asha", "reduction_factor": 1}, "pruner.asha.reduction_factor"),
    ({"type": "hyperband", "min_epochs": 9, "max_epochs": 3}, "pruner.max_epochs: expected more than min_epochs (9), received 3"),
    ({"type": "sha"}, "pruner"),
])
def test_pruner_settings_are_checked(pruner, expected):
    ps = problems(sweep(algorithm={"type": "random"}, max_trials=2, pruner=pruner))
    assert any(p.startswith(expected) for p in ps), ps


def test_hyperband_takes_its_full_budget_from_the_base_spec():
    s = load_sweep(sweep(algorithm={"type": "tpe"}, pruner={"type": "hyperband", "min_epochs": 1}))
    assert s.spec.pruner.max_epochs == 9 and s.epochs == 9 and not s.trials and s.max_trials == 10
    assert s.epoch_metric == "val_accuracy"


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


def test_pruner_problems_come_with_the_others():
    ps = problems(sweep(objective={"metric": "acc"}, algorithm={"type": "random"}, pruner={"type": "hyperband"},
                        max_trials=2, parameters={"training.epochs": [1, 2]}))
    assert [p.split(":")[0] for p in ps] == ["objective.metric", "parameters.training.epochs"]


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
