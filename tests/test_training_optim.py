"""Optimizers, learning-rate schedules and the callbacks that watch a metric (jobs/training/optim.py and
callbacks.py): what `fit` gets from the spec, and the state a resumed run must get back."""

import numpy as np
import pytest

from jobs.spec import parse_spec


def spec_with(**training):
    return parse_spec({"name": "t", "training": training})


@pytest.mark.parametrize("name,cls,attrs", [
    ("sgd", "SGD", {"momentum": 0.9, "nesterov": True}),
    ("rmsprop", "RMSprop", {"momentum": 0.5}),
    ("adadelta", "Adadelta", {}),
    ("adamw", "AdamW", {"weight_decay": 0.01}),
    ("adam", "Adam", {}),
])
def test_optimizers_from_the_spec(name, cls, attrs):
    from jobs.training.optim import make_optimizer

    opt = make_optimizer(spec_with(optimizer=name, learning_rate=0.05, **attrs), 0.05, steps_per_epoch=10)
    assert type(opt).__name__ == cls
    assert float(opt.learning_rate) == pytest.approx(0.05)
    for key, value in attrs.items():
        assert getattr(opt, key) == pytest.approx(value)


def test_cosine_schedule_decays_to_the_floor_over_all_steps():
    from jobs.training.optim import make_learning_rate

    spec = spec_with(learning_rate=0.1, epochs=5, schedule={"type": "cosine", "min_learning_rate": 0.001})
    schedule = make_learning_rate(spec, 0.1, steps_per_epoch=20)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(50)) == pytest.approx(0.001 + (0.1 - 0.001) / 2, rel=1e-3)
    assert float(schedule(100)) == pytest.approx(0.001, rel=1e-3)


def test_cosine_warmup_ramps_up_first():
    from jobs.training.optim import make_learning_rate

    spec = spec_with(learning_rate=0.1, epochs=5, schedule={"type": "cosine", "warmup_epochs": 1})
    schedule = make_learning_rate(spec, 0.1, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.0) and float(schedule(5)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.1) and float(schedule(50)) < 0.001


def test_step_and_warmup_schedules():
    from jobs.training.optim import lr_callbacks

    spec = spec_with(learning_rate=0.1, schedule={"type": "step", "step_epochs": 2, "factor": 0.5, "warmup_epochs": 1})
    (cb,) = lr_callbacks(spec, 0.1)
    assert [round(cb.schedule(e, None), 6) for e in range(5)] == [0.05, 0.1, 0.05, 0.05, 0.025]


def test_plateau_watches_the_checkpoint_metric():
    from jobs.training.optim import lr_callbacks

    spec = spec_with(schedule={"type": "plateau", "patience": 1, "factor": 0.2})
    (cb,) = lr_callbacks(spec, 0.001)
    assert (cb.watcher.monitor, cb.watcher.mode, cb.watcher.factor, cb.watcher.patience) == ("val_accuracy", "max", 0.2, 1)


def _keras_plateau_rates(values, patience, factor, lr):
    """The learning rates Keras' own ReduceLROnPlateau leaves after each epoch: the reference."""
    from types import SimpleNamespace

    import keras

    ref = keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", factor=factor, patience=patience)
    ref.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=keras.Variable(lr))))
    ref.on_train_begin()
    rates = []
    for i, v in enumerate(values):
        ref.on_epoch_end(i, {"val_accuracy": v})
        rates.append(float(ref.model.optimizer.learning_rate))
    return rates


def test_plateau_lowers_the_rate_where_keras_does_and_a_resume_does_not_lower_it_twice():
    """The plateau schedule follows Keras' ReduceLROnPlateau epoch by epoch; on resume it replays the history:
    same best/wait as a run that never stopped, and the restored optimizer's rate (already lowered before the
    restart) is not lowered again."""
    from types import SimpleNamespace

    import keras

    from jobs.training.optim import lr_callbacks

    spec = spec_with(schedule={"type": "plateau", "patience": 2, "factor": 0.5})
    values = [0.5, 0.6, 0.6, 0.55, 0.61, 0.6, 0.6, 0.6]  # val_accuracy: reductions after epochs 4 and 7
    (live,) = lr_callbacks(spec, 0.1)
    live.set_model(SimpleNamespace(optimizer=SimpleNamespace(learning_rate=keras.Variable(0.1))))
    rates = []
    for i, v in enumerate(values):
        live.on_epoch_end(i, {"val_accuracy": v})
        rates.append(float(live.model.optimizer.learning_rate))
    assert rates == pytest.approx(_keras_plateau_rates(values, 2, 0.5, 0.1))
    assert rates[3] == pytest.approx(0.05) and rates[-1] == pytest.approx(0.025)

    (resumed,) = lr_callbacks(spec, 0.1)
    restored = SimpleNamespace(optimizer=SimpleNamespace(learning_rate=keras.Variable(0.05)))
    resumed.set_model(restored)
    resumed.watcher.replay({"val_accuracy": values[:6]})
    for i, v in enumerate(values[6:], start=6):
        resumed.on_epoch_end(i, {"val_accuracy": v})
    assert (resumed.watcher.best, resumed.watcher.wait) == (live.watcher.best, live.watcher.wait)
    assert float(restored.optimizer.learning_rate) == pytest.approx(0.025)


@pytest.mark.parametrize("mode, values, min_delta, patience, stops_after", [
    ("min", [1.0, 0.9, 0.95, 0.96, 0.97], 0.0, 3, 5),  # three epochs without a lower loss
    ("min", [1.0, 0.99, 0.98, 0.97, 0.96], 0.05, 2, 3),  # improvements smaller than min_delta do not count
    ("max", [0.5, 0.6, 0.7, 0.8, 0.9], 0.0, 1, None),  # always improving
    ("max", [0.5, float("nan"), 0.5, 0.4], 0.0, 2, 3),  # NaN is never an improvement
])
def test_early_stopping_stops_where_keras_does(mode, values, min_delta, patience, stops_after):
    """EarlyStop against Keras' EarlyStopping on the same values; and a resumed run that replays the epochs
    before the restart stops at the same epoch."""
    from types import SimpleNamespace

    import keras

    from jobs.training.callbacks import EarlyStop

    monitor = "val_loss" if mode == "min" else "val_accuracy"

    def epochs_run(callback, start=0):
        callback.set_model(SimpleNamespace(stop_training=False))
        for i, v in enumerate(values[start:], start=start):
            callback.on_epoch_end(i, {monitor: v})
            if callback.model.stop_training:
                return i + 1
        return None

    ref = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, min_delta=min_delta)
    ref.set_model(SimpleNamespace(stop_training=False))
    ref.on_train_begin()
    assert epochs_run(EarlyStop(monitor, mode, patience, min_delta).callback(keras)) == stops_after
    if not any(np.isnan(values)):
        assert epochs_run(ref) == stops_after
    resumed = EarlyStop(monitor, mode, patience, min_delta)
    resumed.replay({monitor: values[:2]})
    assert epochs_run(resumed.callback(keras), start=2) == stops_after


@pytest.mark.slow
def test_mixed_precision_label_smoothing_and_plateau_train_and_export(tmp_path):
    import tensorflow as tf

    from jobs.training.loop import run

    spec = parse_spec({
        "name": "mp", "data": {"max_train_examples": 200},
        "model": {"type": "cnn", "conv_filters": [4], "padding": "same", "dense_units": [8]},
        "training": {"epochs": 2, "mixed_precision": True, "label_smoothing": 0.1, "schedule": {"type": "plateau"}},
        "augmentation": {"rotation": 0.05, "zoom": 0.1, "contrast": 0.1},
        "export": {"input_dtype": "float32", "warmup_requests": 0},
    })
    result = run(spec, artifacts_dir=str(tmp_path))
    assert np.isfinite(result.metrics["test_loss"])
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    out = serve(images=tf.zeros([2, 8, 8, 1], tf.float32))
    assert out["probabilities"].dtype == tf.float32
    assert not (result.export_path / "assets.extra").exists()
    import keras
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy does not leak into later runs
