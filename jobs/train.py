"""The training job: `python -m jobs.train --spec FILE` (what the container runs) and `jobctl train SPEC`.

One run: load data -> build the model under the chosen strategy -> fit with the habits the seed notebooks ask for
(seeds, best checkpoint, early stopping, TensorBoard, CSV history, plots, model summary) -> evaluate the best
weights on the test set -> export them for TF Serving -> write metrics.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from jobs import exit_codes
from jobs.fsutil import atomic_write_json, atomic_write_text
from jobs.spec import JobSpec, SpecError, load_spec

log = logging.getLogger("jobs.train")


@dataclass
class RunResult:
    run_dir: Path
    export_path: Optional[Path]
    metrics: dict[str, Any]


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)  # also seeds Python, NumPy and TensorFlow's global generator
    if deterministic:
        tf.config.experimental.enable_op_determinism()


# ------------------------------------------------------------------------------------------ optimizer & LR
def make_learning_rate(spec: JobSpec, learning_rate: float, steps_per_epoch: int):
    """A float, or a per-step schedule for `cosine` (step and plateau schedules are per-epoch callbacks)."""
    import keras

    t = spec.training
    if t.schedule.type != "cosine":
        return learning_rate
    total = max(1, t.epochs * steps_per_epoch)
    warmup = t.schedule.warmup_epochs * steps_per_epoch
    alpha = t.schedule.min_learning_rate / learning_rate
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - warmup), alpha=alpha, warmup_target=learning_rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(learning_rate, total, alpha=alpha)


def make_optimizer(spec: JobSpec, learning_rate, steps_per_epoch: int):
    import keras

    t = spec.training
    lr: Any = make_learning_rate(spec, learning_rate, steps_per_epoch)
    common: dict[str, Any] = {"learning_rate": lr}
    if t.weight_decay and t.optimizer != "adamw":
        common["weight_decay"] = t.weight_decay
    if t.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=t.weight_decay or 0.004, **{k: v for k, v in common.items() if k != "weight_decay"})
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=t.momentum, nesterov=t.nesterov, **common)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=t.momentum, **common)
    if t.optimizer == "adadelta":
        return keras.optimizers.Adadelta(**common)
    raise ValueError(f"training.optimizer: unknown optimizer {t.optimizer!r}")


def lr_callbacks(spec: JobSpec, learning_rate: float) -> list:
    import keras

    s = spec.training.schedule
    if s.type == "step" or (s.type == "constant" and s.warmup_epochs):

        def schedule(epoch, _lr):
            if epoch < s.warmup_epochs:
                return learning_rate * (epoch + 1) / (s.warmup_epochs + 1)
            if s.type == "step":
                return max(s.min_learning_rate, learning_rate * s.factor ** (epoch // s.step_epochs))
            return learning_rate

        return [keras.callbacks.LearningRateScheduler(schedule)]
    if s.type == "plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor=spec.callbacks.checkpoint.monitor,
                mode=spec.callbacks.checkpoint.resolved_mode(),
                factor=s.factor,
                patience=s.patience,
                min_lr=s.min_learning_rate,
                verbose=0,
            )
        ]
    return []


# ------------------------------------------------------------------------------------------ run artifacts
def _plot_history(history: dict[str, list[float]], run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric in ("accuracy", "loss"):
        if metric not in history:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        epochs = range(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label=f"validation {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = run_dir / f".{metric}.png.tmp"
        fig.savefig(tmp, format="png")
        plt.close(fig)
        os.replace(tmp, run_dir / f"{metric}.png")
        written.append(run_dir / f"{metric}.png")
    return written


def _write_summary_and_diagram(model, run_dir: Path) -> Optional[str]:
    import shutil

    import keras

    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=100)
    atomic_write_text(run_dir / "model_summary.txt", "\n".join(lines) + "\n")
    if shutil.which("dot") is None:
        return "graphviz is not installed (apt-get install graphviz): skipped model.png"
    try:
        keras.utils.plot_model(model, to_file=str(run_dir / "model.png"), show_shapes=True)
    except Exception as exc:  # pydot/graphviz version mismatches must not fail a training run
        return f"could not draw model.png ({exc.__class__.__name__}: {exc})"
    return None


class EpochLine:
    """One line per epoch a person can follow; builds a Keras callback lazily (keras imported late)."""

    @staticmethod
    def make(total_epochs: int, monitor: str, mode: str, train_count: int, out=sys.stdout):
        import keras

        class _Callback(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best = None
                self.start = 0.0
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                took = time.perf_counter() - self.start
                self.seconds.append(took)
                value = logs.get(monitor)
                improved = value is not None and (
                    self.best is None or (value > self.best if mode == "max" else value < self.best)
                )
                if improved:
                    self.best = value
                parts = [f"epoch {epoch + 1:>3}/{total_epochs}"]
                for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                    if key in logs:
                        parts.append(f"{key} {logs[key]:.4f}")
                lr = logs.get("learning_rate")
                if lr is not None:
                    parts.append(f"lr {float(lr):.2e}")
                parts.append(f"{took:.1f}s")
                parts.append(f"{train_count / max(took, 1e-9):,.0f} img/s")
                if improved:
                    parts.append(f"* best {monitor}")
                print("  ".join(parts), file=out, flush=True)

        return _Callback()


# -------------------------------------------------------------------------------------------------- run
def run(
    spec: JobSpec,
    **kwargs,
) -> RunResult:
    """Train `spec`; on failure, `metrics.json` records status "failed" and the error before re-raising."""
    run_id = kwargs.pop("run_id", None) or new_run_id()
    root = Path(kwargs.get("artifacts_dir") or spec.artifacts_dir)
    try:
        return _run(spec, run_id=run_id, **kwargs)
    except BaseException as exc:
        run_dir = root / "runs" / spec.name / run_id
        if run_dir.is_dir() and not (run_dir / "metrics.json").exists():
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            atomic_write_json(
                run_dir / "metrics.json",
                {"status": status, "run_dir": str(run_dir), "error": f"{exc.__class__.__name__}: {exc}"},
            )
        raise


def _run(
    spec: JobSpec,
    *,
    artifacts_dir: Optional[str] = None,
    run_id: Optional[str] = None,
    virtual_devices: int = 0,
    export: bool = True,
    out=sys.stdout,
) -> RunResult:
    """Train `spec` to completion; returns where everything went. Raises on failure."""
    from jobs import distribute

    # Devices must be configured before any other TensorFlow call.
    info = distribute.select_strategy(spec.distribution.strategy, virtual_devices)
    seed_everything(spec.seed, spec.training.deterministic)

    import keras
    import numpy as np

    from jobs.data import load_dataset
    from jobs.export import export_model
    from jobs.models import build_model
    from jobs.pipeline import make_dataset

    t0 = time.perf_counter()
    root = Path(artifacts_dir or spec.artifacts_dir)
    run_dir = root / "runs" / spec.name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.yaml", spec.to_yaml())

    data = load_dataset(spec.data, spec.seed)
    for note in data.notes:
        print(f"data: {note}", file=out)
    print(
        f"data: {spec.data.dataset} train {len(data.x_train)}, validation {len(data.x_val)}, test {len(data.x_test)}, "
        f"input {data.input_shape}, {data.num_classes} classes",
        file=out,
    )

    t = spec.training
    replicas = info.replicas
    global_batch = t.batch_size * (replicas if t.batch_size_per == "replica" else 1)
    learning_rate = t.learning_rate * (replicas if t.scale_learning_rate else 1)
    steps_per_epoch = max(1, -(-len(data.x_train) // global_batch))
    print(
        f"strategy: {info.kind}, {replicas} replica(s); global batch {global_batch} "
        f"({global_batch / replicas:g} per replica); learning rate {learning_rate:g}",
        file=out,
    )

    if t.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with info.strategy.scope():
            model = build_model(
                spec.model,
                spec.preprocessing,
                data.input_shape,
                data.num_classes,
                data.pixel_max,
                x_adapt=data.x_train if spec.preprocessing.standardize else None,
                name=spec.name.replace("-", "_"),
            )
            model.compile(
                optimizer=make_optimizer(spec, learning_rate, steps_per_epoch),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t.label_smoothing),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                jit_compile=t.jit_compile,
            )
    finally:
        if t.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")

    train_ds = make_dataset(
        data.x_train, data.y_train, data.num_classes, global_batch, training=True, seed=spec.seed,
        augmentation=spec.augmentation, shuffle_buffer=t.shuffle_buffer, deterministic=t.deterministic,
    )
    val_ds = make_dataset(data.x_val, data.y_val, data.num_classes, global_batch, training=False, seed=spec.seed)
    test_ds = make_dataset(data.x_test, data.y_test, data.num_classes, global_batch, training=False, seed=spec.seed)

    diagram_note = _write_summary_and_diagram(model, run_dir)
    if diagram_note:
        print(f"note: {diagram_note}", file=out)

    cb = spec.callbacks
    monitor, mode = cb.checkpoint.monitor, cb.checkpoint.resolved_mode()
    ckpt_path = run_dir / "checkpoints" / "best.weights.h5"
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    callbacks: list = [
        keras.callbacks.ModelCheckpoint(
            str(ckpt_path), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True, verbose=0
        ),
        EpochLine.make(t.epochs, monitor, mode, len(data.x_train), out),
        *lr_callbacks(spec, learning_rate),
    ]
    if cb.early_stopping.enabled:
        es = cb.early_stopping
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
                restore_best_weights=es.restore_best_weights, verbose=0,
            )
        )
    if cb.csv_history:
        callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv")))
    if cb.tensorboard.enabled:
        callbacks.append(
            keras.callbacks.TensorBoard(
                log_dir=str(run_dir / "tensorboard"), histogram_freq=cb.tensorboard.histogram_freq,
                profile_batch=cb.tensorboard.profile_batch,
            )
        )

    fit_start = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=t.epochs, callbacks=callbacks, verbose=0, shuffle=False
    )
    fit_seconds = time.perf_counter() - fit_start
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    epochs_run = len(hist.get("loss", []))
    if monitor not in hist:
        raise ValueError(
            f"callbacks.checkpoint.monitor: metric {monitor!r} was never logged. Received: monitor={monitor!r}; "
            f"expected one of {sorted(hist)}"
        )
    values = hist[monitor]
    best_index = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
    if not np.isfinite(values[best_index]):
        raise FloatingPointError(f"{monitor} was never finite: training diverged (try a lower learning rate)")

    # The best epoch by the monitor, not the last one, is what gets evaluated and exported.
    model.load_weights(str(ckpt_path))
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)

    atomic_write_json(run_dir / "history.json", {"epochs": list(range(1, epochs_run + 1)), **hist})
    _plot_history(hist, run_dir)

    metrics: dict[str, Any] = {
        "status": "succeeded",
        "run_dir": str(run_dir),
        "spec_hash": spec.spec_hash(),
        "model_name": spec.model_name,
        "monitor": monitor,
        "best_epoch": best_index + 1,
        "best_val_accuracy": max(hist.get("val_accuracy", [float("nan")])),
        "best_val_loss": min(hist.get("val_loss", [float("nan")])),
        "best_monitor_value": values[best_index],
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "epochs_run": epochs_run,
        "fit_seconds": fit_seconds,
        "images_per_second": len(data.x_train) * epochs_run / max(fit_seconds, 1e-9),
        "num_train": len(data.x_train),
        "num_val": len(data.x_val),
        "num_test": len(data.x_test),
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "pixel_max": data.pixel_max,
        "class_names": data.class_names,
        "replicas": replicas,
        "workers": info.workers,
        "strategy": info.kind,
        "global_batch_size": global_batch,
        "learning_rate": learning_rate,
        "export_path": None,
        "version": None,
    }

    export_path = None
    if export:
        export_path = export_model(
            model,
            root / "models",
            spec.model_name,
            class_names=data.class_names,
            input_shape=data.input_shape,
            input_dtype=spec.export.input_dtype,
            version=spec.export.version,
            pixel_max=data.pixel_max,
            warmup_samples=data.x_test[: spec.export.warmup_requests],
            metadata={
                "spec_hash": spec.spec_hash(),
                "run_dir": str(run_dir),
                "metrics": {k: metrics[k] for k in ("best_epoch", "best_val_accuracy", "best_val_loss", "test_accuracy", "test_loss")},
            },
        )
        metrics["export_path"] = str(export_path)
        metrics["version"] = int(export_path.name)
    metrics["wall_time_seconds"] = time.perf_counter() - t0
    atomic_write_json(run_dir / "metrics.json", metrics)

    print(
        f"best epoch {metrics['best_epoch']}/{epochs_run} ({monitor} {values[best_index]:.4f}); "
        f"test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f}; {metrics['wall_time_seconds']:.1f}s",
        file=out,
    )
    print(f"run:    {run_dir}", file=out)
    if export_path:
        print(f"export: {export_path}", file=out)
    return RunResult(run_dir, export_path, metrics)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the job spec (YAML)")
    parser.add_argument("--artifacts-dir", default=None, help="overrides spec.artifacts_dir (the PVC mount in pods)")
    parser.add_argument("--run-id", default=None, help="run directory name (default: a UTC timestamp)")
    parser.add_argument("--virtual-devices", type=int, default=0, help="split the CPU into N logical devices")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a spec field")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {}
    import yaml

    for pair in args.set:
        if "=" not in pair:
            print(f"error: --set expects FIELD.PATH=VALUE, received {pair!r}", file=sys.stderr)
            return exit_codes.BAD_SPEC
        k, v = pair.split("=", 1)
        overrides[k] = yaml.safe_load(v)
    try:
        spec = load_spec(args.spec, overrides)
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return exit_codes.BAD_SPEC
    return run_with_exit_code(spec, artifacts_dir=args.artifacts_dir, run_id=args.run_id, virtual_devices=args.virtual_devices)


def run_with_exit_code(spec: JobSpec, **kwargs) -> int:
    """Map failures to the documented exit codes (the pod failure policy depends on them)."""
    from jobs.data import DataUnavailable

    try:
        run(spec, **kwargs)
        return exit_codes.OK
    except DataUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.DATA_UNAVAILABLE
    except (ValueError, SpecError) as exc:
        # Problems the spec could not catch alone (e.g. a train_size larger than the dataset).
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.BAD_SPEC
    except Exception as exc:  # noqa: BLE001 - the job's last word must be one clear line, then the code
        log.exception("training failed")
        print(f"error: training failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return exit_codes.FAILURE


if __name__ == "__main__":
    sys.exit(main())
