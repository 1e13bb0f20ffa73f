"""The training engine end to end on digits: run artifacts, best-checkpoint export, reproducibility, failures."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from jobs.datasets import load_dataset
from jobs import exit_codes
from jobs.errors import BadInputError
from jobs.spec import SpecError, apply_overrides, parse_spec

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

pytestmark = pytest.mark.slow


def small_spec(**overrides):
    base = {
        "name": "tiny-digits",
        "seed": 5,
        "data": {"dataset": "digits", "max_train_examples": 500},
        "model": {"type": "cnn", "conv_filters": [8, 16], "padding": "same", "dense_units": [32]},
        "training": {"epochs": 4, "batch_size": 32, "learning_rate": 0.01},
        "export": {"warmup_requests": 3},
    }
    return parse_spec(apply_overrides(base, overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from jobs.training.loop import run

    root = tmp_path_factory.mktemp("artifacts")
    spec = small_spec()
    result = run(spec, artifacts_dir=str(root), run_id="r1")
    return spec, root, result


def test_run_directory_holds_every_artifact(trained):
    _, root, result = trained
    run_dir = root / "runs" / "tiny-digits" / "r1"
    assert result.run_dir == run_dir
    for name in ("spec.yaml", "metrics.json", "history.csv", "history.json", "accuracy.png", "loss.png",
                 "model_summary.txt", "checkpoints/best.weights.h5"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(rows) == result.metrics["epochs_run"] == 4
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("best_epoch", "best_val_accuracy", "best_val_loss", "test_accuracy", "test_loss", "epochs_run",
                "wall_time_seconds", "images_per_second", "export_path", "spec_hash"):
        assert key in m, key
    assert m["status"] == "succeeded" and m["images_per_second"] > 0


def test_the_best_epoch_is_exported_not_the_last(trained):
    """The export's accuracy on the validation set equals the history's value at best_epoch."""
    import tensorflow as tf

    spec, _, result = trained
    history = json.loads((result.run_dir / "history.json").read_text())
    best = result.metrics["best_epoch"]
    assert best == int(np.argmax(history["val_accuracy"])) + 1
    data = load_dataset(spec.data)
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    predicted = serve(images=tf.constant(data.x_val))["class_ids"].numpy()
    assert abs(float(np.mean(predicted == data.y_val)) - history["val_accuracy"][best - 1]) < 1e-6


def test_export_reloaded_gives_the_reported_test_accuracy(trained):
    import tensorflow as tf

    spec, root, result = trained
    export = result.export_path
    assert export == root / "models" / "tiny-digits" / "1"
    assert (export / "saved_model.pb").is_file() and (export / "variables").is_dir()
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".tmp")]
    loaded = tf.saved_model.load(str(export))
    serve = loaded.signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["images"]
    assert serve.structured_input_signature[1]["images"].dtype == tf.uint8
    data = load_dataset(spec.data)
    out = serve(images=tf.constant(data.x_test))
    probs, ids = out["probabilities"].numpy(), out["class_ids"].numpy()
    assert probs.shape == (len(data.x_test), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(ids, probs.argmax(axis=1))
    accuracy = float(np.mean(ids == data.y_test))
    reported = json.loads((result.run_dir / "metrics.json").read_text())["test_accuracy"]
    assert abs(accuracy - reported) < 1e-6


def test_export_metadata_class_names_and_warmup(trained):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    spec, _, result = trained
    meta = json.loads((result.export_path / "jobctl.json").read_text())
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["input_shape"] == [8, 8, 1] and meta["input_dtype"] == "uint8" and meta["input_name"] == "images"
    assert meta["spec_hash"] == spec.spec_hash()
    assert (result.export_path / "assets" / "class_names.txt").read_text().split() == meta["class_names"]
    records = list(tf.data.TFRecordDataset(str(result.export_path / "assets.extra" / "tf_serving_warmup_requests")))
    assert len(records) == 3
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    assert log.predict_log.request.model_spec.name == "tiny-digits"
    assert list(log.predict_log.request.inputs["images"].tensor_shape.dim)[0].size == 1


def test_same_spec_and_seed_give_identical_metrics(tmp_path):
    from jobs.training.loop import run

    spec = small_spec(**{"training.epochs": 2, "training.deterministic": True, "data.max_train_examples": 300,
                         "augmentation": {"rotation": 0.05, "translation": 0.1, "contrast": 0.1}})
    a = run(spec, artifacts_dir=str(tmp_path), run_id="a", export=False)
    b = run(spec, artifacts_dir=str(tmp_path), run_id="b", export=False)
    ha = json.loads((a.run_dir / "history.json").read_text())
    hb = json.loads((b.run_dir / "history.json").read_text())
    assert ha == hb
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]


def test_steps_per_execution_trains_and_validates_exactly_as_one_step_per_call(tmp_path):
    """Several batches per call must not move an epoch's boundary: Keras runs whole calls even past the end of
    a repeated dataset, so the engine uses a divisor of the steps per epoch (10 here: 300 images / 32), and
    feeds validation (9 batches, not a multiple of 10) one pass at a time so no batch is scored twice."""
    from jobs.pipeline import steps_per_call
    from jobs.training.loop import run

    assert [steps_per_call(16, n) for n in (64, 36, 10, 37, 1, 1250)] == [16, 12, 10, 1, 1, 10]
    spec = lambda k: small_spec(**{"training.epochs": 3, "training.deterministic": True,  # noqa: E731
                                   "data.max_train_examples": 300, "training.steps_per_execution": k})
    one = run(spec(1), artifacts_dir=str(tmp_path), run_id="one", export=False)
    many = run(spec(16), artifacts_dir=str(tmp_path), run_id="many", export=False)
    h1 = json.loads((one.run_dir / "history.json").read_text())
    hm = json.loads((many.run_dir / "history.json").read_text())
    assert many.metrics["num_train"] == 300 and -(-many.metrics["num_val"] // 32) % 10 != 0  # 9 validation batches
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert hm[key] == pytest.approx(h1[key], rel=1e-5, abs=1e-6), key
    assert many.metrics["test_accuracy"] == pytest.approx(one.metrics["test_accuracy"], abs=1e-9)


def test_reexport_and_runs_listing(trained):
    _, root, result = trained
    out = runner.invoke(app, ["export", str(result.run_dir)])
    assert out.exit_code == 0, out.output
    assert (root / "models" / "tiny-digits" / "2" / "saved_model.pb").is_file()
    # The re-export is warmed up as the first export was: the same records, byte for byte.
    warmup = Path("assets.extra") / "tf_serving_warmup_requests"
    first, again = root / "models" / "tiny-digits" / "1" / warmup, root / "models" / "tiny-digits" / "2" / warmup
    assert again.is_file() and again.read_bytes() == first.read_bytes()
    listing = runner.invoke(app, ["runs", "--artifacts-dir", str(root), "--json"])
    rows = json.loads(listing.output)
    assert [(r["name"], r["run_id"], r["status"]) for r in rows] == [("tiny-digits", "r1", "succeeded")]
    bad = runner.invoke(app, ["export", str(root / "nope")])
    assert bad.exit_code == 2 and "is not a finished run" in bad.output


def test_explicit_version_that_exists_is_refused(trained, tmp_path):
    from jobs.export import ExportError, next_version

    model_dir = trained[2].export_path.parent
    with pytest.raises(ExportError, match="version 1 already exists"):
        next_version(model_dir, 1)
    assert next_version(tmp_path, "increment") == 1


def test_data_problem_found_at_run_time_exits_2_and_records_failure(tmp_path):
    from jobs.train import run_with_exit_code

    spec = small_spec(**{"data.validation": {"train_size": 100000}})
    code = run_with_exit_code(spec, artifacts_dir=str(tmp_path), run_id="bad")
    assert code == 2
    metrics = json.loads((tmp_path / "runs" / "tiny-digits" / "bad" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "train_size=100000" in metrics["error"]
    assert not (tmp_path / "models").exists()


def test_container_entry_point_bad_spec_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraining: {epochs: -1}\n")
    proc = subprocess.run([sys.executable, "-m", "jobs.train", "--spec", str(bad)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "training.epochs: expected greater than or equal to 1; received -1" in proc.stderr


@pytest.mark.parametrize("raised, code", [
    # Issue 13's one behaviour change: before, `except ValueError` exited 2 and a Kubernetes Job failed for good.
    (ValueError("Shapes (None, 3) and (None, 4) are incompatible"), exit_codes.FAILURE),
    (SpecError(["--run-id: expected letters, digits"], "arguments"), exit_codes.BAD_SPEC),
    (BadInputError("training.batch_size: cannot be split"), exit_codes.BAD_SPEC),
], ids=["stray-value-error-retried", "spec-error", "bad-input"])
def test_entry_point_retries_a_stray_error_and_refuses_bad_input(tmp_path, monkeypatch, capsys, raised, code):
    from jobs import train

    spec = tmp_path / "s.yaml"
    spec.write_text("name: x\n")

    def run(spec, **kwargs):
        raise raised

    monkeypatch.setattr(train, "run", run)
    assert train.main(["--spec", str(spec)]) == code
    assert str(raised).splitlines()[0] in capsys.readouterr().err


def test_cli_help_does_not_import_tensorflow():
    code = ("import sys; from typer.testing import CliRunner; from cli.main import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_seed_states_are_kept_for_the_last_two_backups_and_restored_for_the_epoch_keras_restores(tmp_path):
    """A SIGTERM between the seed-state write and Keras' own backup leaves Keras one epoch behind: the states of
    that epoch are still there. A backup with no matching states changes nothing."""
    import keras

    from jobs.training.resume import SeedStates

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dropout(0.5)])
    (state,) = SeedStates._variables(model)
    states = SeedStates(tmp_path)
    writer, restorer = states.writer(keras), states.restorer(keras)
    writer.set_model(model)
    restorer.set_model(model)
    seen = {}
    for epoch in range(3):
        state.assign([epoch + 10, epoch + 20])
        seen[epoch + 1] = [epoch + 10, epoch + 20]
        writer.on_epoch_end(epoch)
    assert sorted(json.loads((tmp_path / "seed_states.json").read_text())) == ["2", "3"]
    for restored in (3, 2):
        (tmp_path / "training_metadata.json").write_text(json.dumps({"epoch": restored, "batch": 0}))
        state.assign([0, 0])
        restorer.on_train_begin()
        assert np.asarray(state).tolist() == seen[restored]
    (tmp_path / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))
    restorer.on_train_begin()
    assert np.asarray(state).tolist() == seen[2]  # unchanged: epoch 1's states are gone


def _train_process(spec_path, art, *args):
    """`jobctl train` in a fresh process: logical devices can be set up only once per process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli.main", "train", str(spec_path), "--artifacts-dir", str(art), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_mistakes_found_by_the_engine_are_exit_2_or_3_before_training(tmp_path):
    """Each was a traceback (exit 1) or found only after training: an uneven split over devices, a run id that
    escapes runs/, pretrained weights that are not on this machine."""
    import yaml

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(small_spec().model_dump(mode="json")))
    art = tmp_path / "art"
    r = _train_process(spec, art, "--virtual-devices", "3")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot be split evenly across 3 replicas" in r.stderr and "Traceback" not in r.stderr
    assert not list(art.glob("runs/*/*/backup"))  # nothing trained

    r = runner.invoke(app, ["train", str(spec), "--artifacts-dir", str(art), "--run-id", "../../escape"])
    assert r.exit_code == 2 and "--run-id: expected letters, digits" in r.output
    assert not (art / "escape").exists() and not (tmp_path / "escape").exists()

    transfer = tmp_path / "t.yaml"
    transfer.write_text(yaml.safe_dump({"name": "tl", "data": {"dataset": "digits", "resize": [32, 32], "color_mode": "rgb"},
                                        "model": {"type": "transfer", "transfer": {"base": "vgg16", "weights": str(tmp_path / "nope.h5")}}}))
    r = runner.invoke(app, ["train", str(transfer), "--artifacts-dir", str(art)])
    assert r.exit_code == 3, r.output
    assert "model.transfer.weights" in r.output and "Traceback" not in r.output


def test_a_run_id_is_not_reused_for_another_spec_nor_resumed_with_fewer_epochs(trained, tmp_path):
    """A finished run with the same id and another spec would be reported 'already succeeded' for a spec it never
    trained; a backup holding more epochs than asked would leave fit nothing to run."""
    import yaml

    spec, root, _ = trained
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    r = runner.invoke(app, ["train", str(path), "--artifacts-dir", str(root), "--run-id", "r1", "--set", "training.epochs=5"])
    assert r.exit_code == 2, r.output
    assert "--run-id r1: that run already succeeded with another spec" in r.output
    r = runner.invoke(app, ["train", str(path), "--artifacts-dir", str(root), "--run-id", "r1"])
    assert r.exit_code == 0 and "already succeeded; nothing to do" in r.output  # the same spec: a retried pod

    backup = tmp_path / "art" / "runs" / spec.name / "rb" / "backup"
    backup.mkdir(parents=True)
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    r = runner.invoke(app, ["train", str(path), "--artifacts-dir", str(tmp_path / "art"), "--run-id", "rb",
                            "--set", "training.epochs=2"])
    assert r.exit_code == 2, r.output
    assert "training.epochs: 2, but this run's backup already holds 3 finished epochs" in r.output
