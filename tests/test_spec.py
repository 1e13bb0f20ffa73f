"""The job spec: every example validates; mistakes are all reported at once, with field paths; nothing written."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from jobs.spec import JobSpec, SpecError, apply_overrides, field_exists, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
runner = CliRunner()


def test_there_is_an_example_per_seed_recipe_and_a_digits_spec():
    names = {p.stem for p in EXAMPLES}
    for expected in ("digits-cnn", "fashion-mnist-mlp", "cifar10-cnn", "cifar10-cnn-lr1e-4", "cifar10-cnn-dropout",
                     "cifar10-batchnorm-cnn", "cifar10-separable-cnn", "dogs-image-folder"):
        assert expected in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_validates(path):
    spec = load_spec(path)
    assert spec.name == path.stem  # one file, one job: the names match so runs are easy to find


def test_three_mistakes_three_messages_exit_2_and_nothing_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Not_A_DNS_Name\ntraining:\n  learning_rate: -0.1\n  optimzer: adam\n")
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2
    out = result.output
    assert "3 problems" in out
    assert "name: expected a DNS-1123 label" in out and "'Not_A_DNS_Name'" in out
    assert "training.learning_rate: expected greater than 0; received -0.1" in out
    assert "training.optimzer: unknown field (did you mean 'optimizer'?)" in out
    assert list(tmp_path.iterdir()) == [bad]  # no artifacts dir, no run dir


def test_errors_name_path_received_and_allowed():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "ok", "data": {"dataset": "cifar11", "validation": {"fraction": 1.5}},
                    "model": {"type": "cnn", "conv_filters": [8, 8], "kernel_size": [3, 3, 3]}})
    problems = info.value.problems
    assert any(p.startswith("data.dataset: expected 'digits', 'mnist'") and "received 'cifar11'" in p for p in problems)
    assert any(p.startswith("data.validation.fraction: expected less than 1") and "1.5" in p for p in problems)
    assert any("kernel_size has 3 entries but conv_filters has 2" in p for p in problems)


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\ntraining:\n  epochs: [1\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert "line" in info.value.problems[0] and "not valid YAML" in info.value.problems[0]


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_validation_choices_are_exclusive_and_default_to_a_fifth():
    assert parse_spec({"name": "a"}).data.validation.fraction == 0.2
    with pytest.raises(SpecError, match="choose one of fraction, train_size, use_test"):
        parse_spec({"name": "a", "data": {"validation": {"fraction": 0.1, "train_size": 100}}})


def test_paths_required_for_folder_and_npz_datasets():
    with pytest.raises(SpecError, match="needs data.path"):
        parse_spec({"name": "a", "data": {"dataset": "image_folder"}})


def test_rescale_accepts_notebook_fractions():
    assert parse_spec({"name": "a", "preprocessing": {"rescale": "1/255"}}).preprocessing.rescale == pytest.approx(1 / 255)
    with pytest.raises(SpecError, match="preprocessing.rescale"):
        parse_spec({"name": "a", "preprocessing": {"rescale": "one over 255"}})


def test_resources_are_validated_now():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "a", "resources": {"gpus": -1, "memory": "lots", "node_selector": ["gpu"]}})
    text = str(info.value)
    assert "resources.gpus" in text and "resources.memory" in text and "resources.node_selector" in text


def test_multi_worker_needs_workers():
    with pytest.raises(SpecError, match="needs resources.workers >= 2"):
        parse_spec({"name": "a", "distribution": {"strategy": "multi_worker"}})


def test_overrides_and_field_paths():
    data = apply_overrides({"name": "a"}, {"training.learning_rate": 0.01, "model.dropout": 0.5})
    spec = parse_spec(data)
    assert spec.training.learning_rate == 0.01 and spec.model.dropout == 0.5
    assert field_exists("training.schedule.type") and not field_exists("training.lr")


def test_spec_hash_ignores_key_order_and_formatting():
    a = parse_spec(yaml.safe_load("name: a\ntraining: {epochs: 3, batch_size: 16}\n"))
    b = parse_spec(yaml.safe_load("training:\n  batch_size: 16\n  epochs: 3\nname: a\n"))
    c = parse_spec(yaml.safe_load("name: a\ntraining: {epochs: 4, batch_size: 16}\n"))
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


def test_resolved_spec_round_trips():
    spec = load_spec(ROOT / "examples" / "dogs-image-folder.yaml")
    assert parse_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_init_writes_a_commented_spec_that_validates(tmp_path):
    target = tmp_path / "job.yaml"
    result = runner.invoke(app, ["init", str(target), "--name", "my-digits"])
    assert result.exit_code == 0, result.output
    assert "#" in target.read_text()
    assert load_spec(target).name == "my-digits"
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_validate_command_reports_each_file(tmp_path):
    good, bad = EXAMPLES[0], tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {type: resnet}\n")
    result = runner.invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code == 2
    assert f"{good}: ok" in result.output and "model.type: expected 'mlp', 'cnn', 'separable_cnn' or 'transfer'" in result.output


def test_set_override_is_validated_too():
    result = runner.invoke(app, ["validate", str(EXAMPLES[0]), "--set", "training.epochs=zero"])
    assert result.exit_code == 2 and "training.epochs" in result.output
    result = runner.invoke(app, ["validate", str(EXAMPLES[0]), "--set", "training.epochs"])
    assert result.exit_code == 2 and "FIELD.PATH=VALUE" in result.output


def test_default_spec_is_plain_typed_objects():
    spec = JobSpec(name="x")
    assert spec.callbacks.checkpoint.monitor == "val_accuracy" and spec.callbacks.checkpoint.resolved_mode() == "max"
    assert spec.data.dataset == "digits" and spec.model_name == "x"


@pytest.mark.parametrize("field, value", [("cpu", "-1"), ("cpu", 0), ("memory", "0"), ("shm_size", "-1Gi")])
def test_resources_must_be_above_zero(field, value):
    with pytest.raises(SpecError, match=rf"resources\.{field}: expected a quantity above zero"):
        parse_spec({"name": "x", "resources": {field: value}})


@pytest.mark.parametrize("changes, problem", [
    ({"callbacks": {"checkpoint": {"monitor": "val_acc"}}}, "callbacks.checkpoint.monitor"),
    ({"callbacks": {"early_stopping": {"enabled": True, "monitor": "val_acc"}}}, "callbacks.early_stopping.monitor"),
    ({"callbacks": {"checkpoint": {"monitor": "val_loss", "mode": "max"}}},
     "mode 'max' with monitor 'val_loss' keeps the worst epoch; expected mode 'min' or 'auto'"),
    ({"training": {"optimizer": "adam", "momentum": 0.9}}, "momentum applies to optimizers 'sgd' and 'rmsprop'"),
    ({"training": {"schedule": {"type": "plateau", "warmup_epochs": 2}}}, "warmup_epochs applies to the constant"),
    ({"training": {"epochs": 3, "schedule": {"type": "cosine", "warmup_epochs": 3}}}, "expected fewer than epochs (3)"),
    ({"training": {"learning_rate": 0.001, "schedule": {"type": "cosine", "min_learning_rate": 0.01}}},
     "schedule.min_learning_rate: expected below learning_rate (0.001)"),
    ({"data": {"resize": [100000, 100000]}}, "expected [height, width] with both <= 4096"),
])
def test_settings_that_would_fail_late_or_be_ignored_are_spec_errors(changes, problem):
    """Each was accepted by `validate`, then failed after training (a monitor typo) or silently did nothing."""
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "x", **changes})
    assert problem in info.value.render()


def test_a_monitor_typo_lists_what_is_logged():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "x", "callbacks": {"checkpoint": {"monitor": "val_acc"}}})
    assert "val_accuracy" in info.value.render() and "val_acc" in info.value.render()


def test_a_key_given_twice_is_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: dup\ntraining:\n  learning_rate: 0.1\n  learning_rate: 0.01\n")
    with pytest.raises(SpecError, match=r"line 4, column 3: not valid YAML: key 'learning_rate' appears twice"):
        load_spec(path)
