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
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np

from jobs import exit_codes
from jobs.fsutil import atomic_write_json, atomic_write_text
from jobs.spec import JobSpec, SpecError, load_spec, parse_override_pairs

log = logging.getLogger("jobs.train")


@dataclass
class RunResult:
    run_dir: Path
    export_path: Optional[Path]
    metrics: dict[str, Any]


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def seed_everything(seed: int, deterministic: bool, keras_module=None) -> None:
    import keras
    import tensorflow as tf

    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)  # also seeds Python, NumPy and TensorFlow's global generator
    if keras_module is not None and keras_module is not keras:
        keras_module.utils.set_random_seed(seed)  # tf-keras keeps its own generators
    if deterministic:
        tf.config.experimental.enable_op_determinism()


# ------------------------------------------------------------------------------------------ optimizer & LR
def make_learning_rate(spec: JobSpec, learning_rate: float, steps_per_epoch: int, keras=None):
    """A float, or a per-step schedule for `cosine` (step and plateau schedules are per-epoch callbacks)."""
    if keras is None:
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


def make_optimizer(spec: JobSpec, learning_rate, steps_per_epoch: int, keras=None):
    if keras is None:
        import keras

    t = spec.training
    lr: Any = make_learning_rate(spec, learning_rate, steps_per_epoch, keras)
    common: dict[str, Any] = {"learning_rate": lr}
    if t.weight_decay and t.optimizer != "adamw":
        common["weight_decay"] = t.weight_decay
    if t.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=t.weight_decay or 0.004, **common)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=t.momentum, nesterov=t.nesterov, **common)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=t.momentum, **common)
    if t.optimizer == "adadelta":
        return keras.optimizers.Adadelta(**common)
    raise ValueError(f"training.optimizer: unknown optimizer {t.optimizer!r}")


def lr_callbacks(spec: JobSpec, learning_rate: float, keras=None) -> list:
    if keras is None:
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


@contextmanager
def _precision_policy(keras_module, mixed: bool):
    """Build under mixed_float16 when asked; the global policy must not leak into later runs."""
    if not mixed:
        yield
        return
    keras_module.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras_module.mixed_precision.set_global_policy("float32")


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
    def make(total_epochs: int, monitor: str, mode: str, train_count: int, out=None, keras=None):
        out = out or sys.stdout
        if keras is None:
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


def batch_and_learning_rate(t, replicas: int, even_split: bool = False) -> tuple[int, float]:
    """(global batch, learning rate) for `replicas` replicas.

    `batch_size_per: global` splits `batch_size` across the replicas (the same optimisation on any number of
    devices); `replica` multiplies it. `scale_learning_rate` applies the linear scaling rule. `even_split`: the
    strategy needs every full batch to split evenly (one-node MirroredStrategy under Keras 3: 32 over 3 replicas
    fails inside TensorFlow with mismatched AddN shapes; multi-worker tf-keras takes uneven shares).
    """
    global_batch = t.batch_size * (replicas if t.batch_size_per == "replica" else 1)
    if global_batch < replicas:
        raise ValueError(
            f"training.batch_size: a global batch of {global_batch} cannot be split across {replicas} replicas. "
            f"Received: batch_size={t.batch_size}, batch_size_per={t.batch_size_per!r}; expected a global batch "
            f">= {replicas} (or batch_size_per: replica)"
        )
    if even_split and global_batch % replicas:
        raise ValueError(
            f"training.batch_size: a global batch of {global_batch} cannot be split evenly across {replicas} "
            f"replicas. Received: batch_size={t.batch_size}, batch_size_per={t.batch_size_per!r}; expected a "
            f"multiple of {replicas} (or batch_size_per: replica)"
        )
    return global_batch, t.learning_rate * (replicas if t.scale_learning_rate else 1)


# ------------------------------------------------------------------------------------ resumable history
class EpochJournal:
    """The history of a run across restarts: one entry per finished epoch, written after every epoch.

    `fit` restarted by BackupAndRestore only reports the epochs it ran itself; the journal (history.json and
    history.csv, rewritten atomically by the chief) keeps the earlier ones. On the first epoch of a resumed fit,
    entries from that epoch on are dropped: they belonged to an epoch that was cut short of its backup and is
    being trained again, so no epoch is ever listed twice. It sits before BackupAndRestore in the callback list,
    so an epoch in the backup is always in the journal.
    """

    def __init__(self, shared_run_dir: Path, write_dir: Path):
        self.read_path = shared_run_dir / "history.json"
        self.write_dir = write_dir
        self.rows: list[dict[str, float]] = []
        self.complete = False
        if self.read_path.is_file():
            saved = json.loads(self.read_path.read_text())
            epochs = saved.get("epochs", [])
            keys = [k for k in saved if k not in ("epochs", "complete")]
            self.rows = [{k: saved[k][i] for k in keys if i < len(saved[k])} for i in range(len(epochs))]
            self.complete = bool(saved.get("complete"))

    @property
    def history(self) -> dict[str, list[float]]:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        return {k: [row.get(k, float("nan")) for row in self.rows] for k in keys}

    def truncate(self, finished_epochs: int) -> None:
        del self.rows[finished_epochs:]

    def add(self, epoch: int, logs: dict) -> None:
        self.truncate(epoch)
        self.rows.append({k: float(v) for k, v in logs.items() if _is_number(v)})
        self.write()

    def write(self, complete: bool = False) -> None:
        self.complete = complete
        hist = self.history
        epochs = list(range(1, len(self.rows) + 1))
        atomic_write_json(self.write_dir / "history.json", {"epochs": epochs, **hist, "complete": complete})
        keys = sorted(hist)
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(e - 1), *(repr(hist[k][e - 1]) for k in keys)]) for e in epochs]
        atomic_write_text(self.write_dir / "history.csv", "\n".join(lines) + "\n")  # CSVLogger's layout

    def callback(self, keras, on_resume):
        journal = self

        class _Journal(keras.callbacks.Callback):
            first = True

            def on_epoch_begin(self, epoch, logs=None):
                if self.first:
                    self.first = False
                    journal.truncate(epoch)
                    on_resume(epoch, journal.history)

            def on_epoch_end(self, epoch, logs=None):
                journal.add(epoch, logs or {})

        return _Journal()


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


class BestWeights:
    """save_best_only checkpointing that every worker takes part in and only the chief writes.

    Reading weights can be a collective (sync-on-read variables such as batch-norm statistics are all-reduced
    across workers), so every worker reads at the same epochs; the decision is the same everywhere because the
    logged metrics are already all-reduced. The chief writes `checkpoints/best.weights.h5` in the Keras 3 format
    (through the Keras 3 twin when tf-keras trains), atomically. Every worker also keeps the weights in memory, so
    restoring the best epoch needs no shared file unless it predates a restart.
    """

    def __init__(self, monitor: str, mode: str, path: Path, write: bool, twin=None):
        self.monitor, self.mode, self.path, self.write, self.twin = monitor, mode, path, write, twin
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None  # 0-based
        self.snapshot: Optional[list] = None

    def better(self, value: float) -> bool:
        import math

        if value is None or math.isnan(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def resume(self, history: dict[str, list[float]]) -> None:
        for i, value in enumerate(history.get(self.monitor, [])):
            if self.better(value):
                self.best, self.best_epoch = value, i

    def save(self, model) -> None:
        from jobs.distribute import copy_weights

        if self.twin is not None:
            copy_weights(model, self.twin)
        self.snapshot = model.get_weights()
        if self.write:
            target = self.twin if self.twin is not None else model
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.parent / f".tmp-{os.getpid()}-{self.path.name}"  # Keras wants the .weights.h5 suffix
            target.save_weights(str(tmp))
            os.replace(tmp, self.path)

    def restore(self, model) -> None:
        """Put the best epoch's weights into `model` (the training model), and into the twin if there is one."""
        from jobs.distribute import copy_weights

        if self.snapshot is not None:
            model.set_weights(self.snapshot)  # the twin got these same weights in save()
            return
        if not self.path.is_file():
            raise FileNotFoundError(
                f"the best checkpoint {self.path} of a resumed run is missing: the artifacts directory must be "
                "shared by every worker and kept across restarts"
            )
        if self.twin is not None:
            self.twin.load_weights(str(self.path))
            copy_weights(self.twin, model)
        else:
            model.load_weights(str(self.path))

    def callback(self, keras):
        best = self

        class _Best(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                value = (logs or {}).get(best.monitor)
                if value is not None and best.better(float(value)):
                    best.best, best.best_epoch = float(value), epoch
                    best.save(self.model)

        return _Best()


class SeedStates:
    """The layers' random-seed states (dropout masks), kept beside Keras 3's BackupAndRestore backup.

    BackupAndRestore saves the weights and the optimizer, not the seed generators' states, so a resumed run would
    draw the masks of epoch 1 again. The states after each epoch are written just before Keras writes that epoch's
    backup, keeping the previous epoch's too (a SIGTERM can land between the two writes), and the ones matching the
    epoch Keras restored are put back: with the input order fixed by (seed, epoch), a resumed run then trains
    exactly as an uninterrupted one (tests/test_distributed.py).
    """

    def __init__(self, backup_dir: Path):
        self.path = backup_dir / "seed_states.json"

    @staticmethod
    def _variables(model) -> list:
        weights = {id(v) for v in model.weights}
        return [v for v in model.variables if id(v) not in weights]

    def _saved(self) -> dict:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def writer(self, keras):
        """Goes before BackupAndRestore in the callback list."""
        states = self

        class _WriteSeedStates(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                values = [np.asarray(v).tolist() for v in SeedStates._variables(self.model)]
                kept = {k: v for k, v in states._saved().items() if k == str(epoch)}  # the previous backup's
                atomic_write_json(states.path, {**kept, str(epoch + 1): values})

        return _WriteSeedStates()

    def restorer(self, keras):
        """Goes after BackupAndRestore, whose on_train_begin restores the weights and names the epoch."""
        states = self

        class _RestoreSeedStates(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                values = states._saved().get(str(_backed_up_epochs(states.path.parent)))
                variables = SeedStates._variables(self.model)
                if isinstance(values, list) and len(values) == len(variables):
                    for v, value in zip(variables, values):
                        v.assign(np.asarray(value, dtype=v.dtype))

        return _RestoreSeedStates()


def _replay_early_stopping(callback, history: dict[str, list[float]]) -> None:
    """Bring EarlyStopping's patience counter to where it was before the restart (weights are not needed)."""
    values = history.get(callback.monitor, [])
    restore, callback.restore_best_weights = callback.restore_best_weights, False
    stop = callback.model.stop_training
    try:
        for i, value in enumerate(values):
            callback.on_epoch_end(i, {callback.monitor: value})
    finally:
        callback.restore_best_weights = restore
        callback.model.stop_training = stop or callback.model.stop_training


def _replay_plateau(callback, history: dict[str, list[float]], learning_rate: float) -> None:
    """Bring ReduceLROnPlateau's counters (best, wait, cooldown) to where they were before the restart.

    Replayed against a stand-in optimizer starting at the spec's learning rate: the real one was restored with the
    optimizer's state from the backup and must not be lowered a second time.
    """
    import tensorflow as tf

    real = callback.model
    stand_in = SimpleNamespace(optimizer=SimpleNamespace())
    stand_in.optimizer.learning_rate = stand_in.optimizer.lr = tf.Variable(float(learning_rate), trainable=False)
    callback.set_model(stand_in)
    try:
        for i, value in enumerate(history.get(callback.monitor, [])):
            callback.on_epoch_end(i, {callback.monitor: value})
    finally:
        callback.set_model(real)


# -------------------------------------------------------------------------------------------------- run
def run(
    spec: JobSpec,
    **kwargs,
) -> RunResult:
    """Train `spec`; on failure, `metrics.json` records status "failed" and the error before re-raising."""
    from jobs.distribute import Preempted, is_chief_process

    run_id = kwargs.pop("run_id", None) or new_run_id()
    if not RUN_ID.fullmatch(run_id) or ".." in run_id:
        # It names a directory under runs/<name>/: a '/' or '..' would put the run somewhere `jobctl runs` never looks.
        raise SpecError([f"--run-id: expected letters, digits, '.', '_', '-' (1 to 100, no '..'), received {run_id!r}"],
                        "arguments")
    root = Path(kwargs.get("artifacts_dir") or spec.artifacts_dir)
    fresh = not (root / "runs" / spec.name / run_id).exists()
    if fresh and kwargs.get("export", True) and isinstance(spec.export.version, int):
        # A fixed version that is already taken would fail the export after the whole training: refuse it first.
        from jobs.export import next_version

        next_version(root / "models" / spec.model_name, spec.export.version)
    try:
        return _run(spec, run_id=run_id, **kwargs)
    except BaseException as exc:
        run_dir = root / "runs" / spec.name / run_id
        previous = _read_metrics(run_dir)
        # Only the chief writes the run directory; a finished run's record is never overwritten.
        if run_dir.is_dir() and is_chief_process() and previous.get("status") != "succeeded":
            if isinstance(exc, Preempted):
                status = "preempted"
            elif isinstance(exc, KeyboardInterrupt):
                status = "interrupted"
            else:
                status = "failed"
            atomic_write_json(
                run_dir / "metrics.json",
                {"status": status, "run_dir": str(run_dir), "error": f"{exc.__class__.__name__}: {exc}",
                 "epochs_finished": _finished_epochs(run_dir)},
            )
        raise


def _backed_up_epochs(backup_dir: Path) -> int:
    """The epochs Keras 3's BackupAndRestore will restore (its training_metadata.json), 0 for a fresh run."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _read_metrics(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _finished_epochs(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "history.json").read_text()).get("epochs", []))
    except (OSError, ValueError):
        return 0


def _run(
    spec: JobSpec,
    *,
    artifacts_dir: Optional[str] = None,
    run_id: Optional[str] = None,
    virtual_devices: int = 0,
    export: bool = True,
    out=None,
) -> RunResult:
    """Train `spec` to completion; returns where everything went. Raises on failure."""
    import shutil
    import tempfile

    # Resolved per call, not at import: a caller that swapped sys.stdout (a CLI test runner) may have closed it.
    out = out or sys.stdout

    from jobs import distribute

    root = Path(artifacts_dir or spec.artifacts_dir)
    shared_run_dir = root / "runs" / spec.name / run_id
    done = _read_metrics(shared_run_dir)
    if done.get("status") == "succeeded":
        if done.get("spec_hash") not in (None, spec.spec_hash()):
            raise SpecError([f"--run-id {run_id}: that run already succeeded with another spec "
                             f"({shared_run_dir / 'spec.yaml'}); expected a new --run-id to train this one"], "arguments")
        # A retried pod of a finished run (or the same --run-id twice): training again would export twice.
        # Every worker reads the same file, so all of them stop here, before meeting.
        print(f"run {shared_run_dir} already succeeded; nothing to do (a new --run-id trains again)", file=out)
        path = done.get("export_path")
        return RunResult(shared_run_dir, Path(path) if path else None, done)
    # SIGTERM while waiting for peers or loading data is a preemption too (exit 75, not a kill by signal).
    with distribute.PreemptionGuard() as guard:
        # Devices and the cluster must be configured before any other TensorFlow call.
        info = distribute.select_strategy(
            spec.distribution.strategy, virtual_devices, worker_timeout=spec.distribution.worker_timeout_seconds
        )
        guard.reinstall()  # TensorFlow's coordination service may have put its own SIGTERM handler in place
        # Only the chief writes the run directory; the other workers write the same files into a directory of
        # their own that they delete, so every code path (and every collective inside a save) is the same for all.
        if info.is_chief:
            run_dir = shared_run_dir
        else:
            prefix = f"jobctl-worker{info.task_index}-{spec.name}-{run_id}-"
            for stale in Path(tempfile.gettempdir()).glob(prefix + "*"):  # left by a killed predecessor
                shutil.rmtree(stale, ignore_errors=True)
            run_dir = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            return _train(spec, info, root, shared_run_dir, run_dir, export=export, out=out)
        finally:
            if not info.is_chief:
                shutil.rmtree(run_dir, ignore_errors=True)


def _train(spec: JobSpec, info, root: Path, shared_run_dir: Path, run_dir: Path, *, export: bool, out) -> RunResult:
    from jobs import distribute

    keras = info.keras  # Keras 3, or tf-keras under MultiWorkerMirroredStrategy (see jobs/distribute.py)
    seed_everything(spec.seed, spec.training.deterministic, keras)

    from jobs.export import export_model, run_metadata
    from jobs.inputs import load_inputs
    from jobs.models import build_model
    from jobs.pipeline import repeat_for_fit, steps_per_call

    t0 = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "spec.yaml", spec.to_yaml())

    # In memory, or streamed from files (packed shards, large image folders): jobs/inputs.py chooses and says why.
    data = load_inputs(spec.data, num_workers=info.workers, worker_index=info.task_index)
    num_train, num_val, num_test = data.counts["train"], data.counts["validation"], data.counts["test"]
    for note in data.notes:
        print(f"data: {note}", file=out)
    print(f"data: {data.mode}: {data.reason}", file=out)
    print(
        f"data: {spec.data.dataset} train {num_train}, validation {num_val}, test {num_test}, "
        f"input {data.input_shape}, {data.num_classes} classes",
        file=out,
    )

    t = spec.training
    replicas = info.replicas
    global_batch, learning_rate = batch_and_learning_rate(t, replicas, even_split=info.kind == "mirrored")
    steps_per_epoch = max(1, -(-num_train // global_batch))
    # Several steps per call only without a tf.distribute strategy (one device: the CPU or one GPU). Under
    # MirroredStrategy Keras 3.15's multi-step loop fails ("You must feed a value for placeholder tensor" from a
    # cond in the replica context; keras-team/keras#19246, reproduced here with 2 logical devices), and tf-keras
    # (multi-worker) was not checked for an epoch boundary inside a call.
    per_call = steps_per_call(t.steps_per_execution, steps_per_epoch) if info.kind == "default" else 1
    engine = f"tf-keras {keras.__version__}" if info.legacy_keras else f"keras {keras.__version__}"
    print(
        f"strategy: {info.kind}, {replicas} replica(s)"
        + (f" on {info.workers} workers, this is worker {info.task_index}{' (chief)' if info.is_chief else ''}" if info.workers > 1 else "")
        + f"; global batch {global_batch} ({global_batch / replicas:g} per replica); learning rate {learning_rate:g}; "
        + (f"{per_call} steps per call; " if per_call > 1 else "") + engine,
        file=out,
    )

    build_kwargs = dict(
        x_adapt=data.adapt_sample() if spec.preprocessing.standardize else None, name=spec.name.replace("-", "_"),
    )
    with _precision_policy(keras, t.mixed_precision), info.strategy.scope():
        model = info.models.build_model(
            spec.model, spec.preprocessing, data.input_shape, data.num_classes, data.pixel_max, **build_kwargs
        )
        model.compile(
            optimizer=make_optimizer(spec, learning_rate, steps_per_epoch, keras),
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=t.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
            jit_compile=t.jit_compile,
            steps_per_execution=per_call,
        )
    # tf-keras trains; a Keras 3 twin (outside the strategy) holds the weights for the checkpoint and the export,
    # so the files are those of a single-process run.
    twin = None
    if info.legacy_keras:
        import keras as keras3

        with _precision_policy(keras3, t.mixed_precision):
            twin = build_model(spec.model, spec.preprocessing, data.input_shape, data.num_classes, data.pixel_max, **build_kwargs)

    # Keras 3 takes every epoch's pass from one endless dataset, each pass's order fixed by (seed, epoch): a run
    # resumed from its backup starts at the backed-up epoch and sees the orders an uninterrupted run would have.
    # (tf-keras, multi-worker, takes a fresh one-pass iterator per epoch: a new random order each time.)
    first_epoch = None if info.legacy_keras else _backed_up_epochs(shared_run_dir / "backup")
    if first_epoch and first_epoch > t.epochs:  # (equal: fit had finished; the journal resumes the export)
        raise ValueError(f"training.epochs: {t.epochs}, but this run's backup already holds {first_epoch} finished "
                         f"epochs; expected at least {first_epoch} to resume it, or a new --run-id")
    train_ds = data.train_dataset(
        global_batch, seed=spec.seed, augmentation=spec.augmentation, shuffle_buffer=t.shuffle_buffer,
        deterministic=t.deterministic, from_epoch=first_epoch,
    )
    val_ds = data.eval_dataset("validation", global_batch, seed=spec.seed)
    steps = {}
    if not info.legacy_keras:  # tf-keras under MultiWorkerMirroredStrategy keeps one epoch per pass of its shards
        train_ds, steps["steps_per_epoch"] = repeat_for_fit(train_ds, num_train, global_batch)
        repeated_val, validation_steps = repeat_for_fit(val_ds, num_val, global_batch)
        # A multi-step call stops where a one-pass dataset ends, while over a repeated one it would score batches
        # of the next pass: repeat validation only when its batches divide into whole calls.
        if validation_steps % per_call == 0:
            val_ds, steps["validation_steps"] = repeated_val, validation_steps
    train_ds, val_ds = distribute.distribute_input(info, train_ds), distribute.distribute_input(info, val_ds)
    test_ds = data.eval_dataset("test", global_batch, seed=spec.seed)

    diagram_note = _write_summary_and_diagram(twin if twin is not None else model, run_dir)
    if diagram_note:
        print(f"note: {diagram_note}", file=out)

    cb = spec.callbacks
    monitor, mode = cb.checkpoint.monitor, cb.checkpoint.resolved_mode()
    journal = EpochJournal(shared_run_dir, run_dir)
    # Shared: only the chief writes it (its run_dir is shared_run_dir); any worker may read it back in restore().
    ckpt_path = shared_run_dir / "checkpoints" / "best.weights.h5"
    best = BestWeights(monitor, mode, ckpt_path, write=info.is_chief, twin=twin)
    early = None
    if cb.early_stopping.enabled:
        es = cb.early_stopping
        early = keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, min_delta=es.min_delta,
            restore_best_weights=es.restore_best_weights, verbose=0,
        )

    schedule = lr_callbacks(spec, learning_rate, keras)

    def on_resume(epoch: int, history: dict) -> None:
        if first_epoch is not None and epoch != first_epoch:  # Keras fell back to the previous backup
            print(f"note: resumed at epoch {epoch + 1}, but the input order was set up for epoch {first_epoch + 1} "
                  "(the last backup was unreadable): shuffling stays uniform, not the uninterrupted run's order",
                  file=out, flush=True)
        if epoch == 0:
            return
        print(f"resumed: epochs 1-{epoch} restored from {shared_run_dir / 'backup'}", file=out, flush=True)
        best.resume(history)
        if early is not None:
            _replay_early_stopping(early, history)
        for callback in schedule:
            if isinstance(callback, keras.callbacks.ReduceLROnPlateau):
                _replay_plateau(callback, history, learning_rate)

    callbacks: list = [
        journal.callback(keras, on_resume),
        best.callback(keras),
        EpochLine.make(t.epochs, monitor, mode, num_train, out, keras),
        *schedule,
    ]
    if early is not None:
        callbacks.append(early)
    if cb.tensorboard.enabled:
        callbacks.append(
            keras.callbacks.TensorBoard(
                log_dir=str(run_dir / "tensorboard"), histogram_freq=cb.tensorboard.histogram_freq,
                profile_batch=cb.tensorboard.profile_batch,
            )
        )
    # Last: an epoch in the backup is in the journal and the best checkpoint already. The backup dir holds
    # nothing else but the seed states (Keras 3); every worker names the shared one (tf-keras sends the others to
    # temporary sub-directories).
    backup_dir = shared_run_dir / "backup"
    backup_kwargs = {} if info.legacy_keras else {"double_checkpoint": True}  # Keras 3 overwrites in place
    seed_states = None if info.legacy_keras else SeedStates(backup_dir)
    if seed_states is not None:
        callbacks.append(seed_states.writer(keras))
    callbacks.append(keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False, **backup_kwargs))
    if seed_states is not None:
        callbacks.append(seed_states.restorer(keras))

    fit_start = time.perf_counter()
    if journal.complete:
        print(f"resumed: fit had finished ({len(journal.rows)} epochs); evaluating and exporting", file=out)
        best.resume(journal.history)
    else:
        model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, callbacks=callbacks, verbose=0, shuffle=False,
                  **steps)
    fit_seconds = time.perf_counter() - fit_start
    hist = journal.history
    epochs_run = len(journal.rows)
    if monitor not in hist:
        raise ValueError(
            f"callbacks.checkpoint.monitor: metric {monitor!r} was never logged. Received: monitor={monitor!r}; "
            f"expected one of {sorted(hist)}"
        )
    values = hist[monitor]
    if best.best_epoch is None:
        raise FloatingPointError(f"{monitor} was never finite: training diverged (try a lower learning rate)")
    best_index = best.best_epoch

    # The best epoch by the monitor, not the last one, is what gets evaluated and exported.
    best.restore(model)  # the twin (if any) already holds these weights: no copy back needed
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)

    journal.write(complete=True)
    _plot_history(hist, run_dir)
    metrics: dict[str, Any] = {
        "status": "succeeded",
        "run_dir": str(shared_run_dir),
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
        "images_per_second": num_train * epochs_run / max(fit_seconds, 1e-9),
        "num_train": num_train,
        "num_val": num_val,
        "num_test": num_test,
        "data_mode": data.mode,
        "skipped_records": len(data.skipped()),  # data.corrupt_records: skip (each one named in the log)
        "num_classes": data.num_classes,
        "input_shape": list(data.input_shape),
        "pixel_max": data.pixel_max,
        "class_names": data.class_names,
        "replicas": replicas,
        "workers": info.workers,
        "strategy": info.kind,
        "engine": engine,
        "global_batch_size": global_batch,
        "learning_rate": learning_rate,
        "export_path": None,
        "version": None,
    }

    export_path = None
    if export and info.is_chief:
        export_path = export_model(
            twin if twin is not None else model,
            root / "models",
            spec.model_name,
            class_names=data.class_names,
            input_shape=data.input_shape,
            input_dtype=spec.export.input_dtype,
            version=spec.export.version,
            pixel_max=data.pixel_max,
            warmup_samples=data.images("test", spec.export.warmup_requests),
            metadata=run_metadata(spec.spec_hash(), shared_run_dir, metrics),
        )
        metrics["export_path"] = str(export_path)
        metrics["version"] = int(export_path.name)
    metrics["wall_time_seconds"] = time.perf_counter() - t0
    atomic_write_json(run_dir / "metrics.json", metrics)
    if info.is_chief:
        import shutil

        shutil.rmtree(shared_run_dir / "backup", ignore_errors=True)  # the run is recorded: nothing to resume

    print(
        f"best epoch {metrics['best_epoch']}/{epochs_run} ({monitor} {values[best_index]:.4f}); "
        f"test accuracy {test_accuracy:.4f}, test loss {test_loss:.4f}; {metrics['wall_time_seconds']:.1f}s",
        file=out,
    )
    print(f"run:    {shared_run_dir}", file=out)
    if export_path:
        print(f"export: {export_path}", file=out)
    return RunResult(shared_run_dir, export_path, metrics)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the job spec (YAML)")
    parser.add_argument("--artifacts-dir", default=None, help="overrides spec.artifacts_dir (the PVC mount in pods)")
    parser.add_argument("--run-id", default=None, help="run directory name (default: a UTC timestamp)")
    parser.add_argument("--virtual-devices", type=int, default=0, help="split the CPU into N logical devices")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a spec field")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec = load_spec(args.spec, parse_override_pairs(args.set))
    except SpecError as exc:
        print(exc.render(), file=sys.stderr)
        return exit_codes.BAD_SPEC
    return run_with_exit_code(spec, artifacts_dir=args.artifacts_dir, run_id=args.run_id, virtual_devices=args.virtual_devices)


def run_with_exit_code(spec: JobSpec, **kwargs) -> int:
    """Map failures to the documented exit codes (the pod failure policy depends on them)."""
    from jobs.datasets import DataUnavailable
    from jobs.distribute import Preempted, is_peer_failure
    from jobs.export import ExportError
    from jobs.models import WeightsUnavailable

    try:
        run(spec, **kwargs)
        return exit_codes.OK
    except Preempted as exc:
        # The last finished epoch is in <run>/backup: the retried pod (same --run-id) resumes after it.
        print(f"error: {exc}; exiting {exit_codes.PREEMPTED} (retry)", file=sys.stderr)
        return exit_codes.PREEMPTED
    except (DataUnavailable, WeightsUnavailable) as exc:  # files (or pretrained weights) not on this machine
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.DATA_UNAVAILABLE
    except (ValueError, SpecError, ExportError) as exc:
        # Problems the spec could not catch alone (e.g. a train_size larger than the dataset).
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.BAD_SPEC
    except Exception as exc:  # noqa: BLE001 - the job's last word must be one clear line, then the code
        if is_peer_failure(exc):
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            print(f"error: a peer worker is unavailable ({exc.__class__.__name__}: {first}); exiting "
                  f"{exit_codes.PEER_UNAVAILABLE} (retry every worker)", file=sys.stderr)
            return exit_codes.PEER_UNAVAILABLE
        log.exception("training failed")
        print(f"error: training failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return exit_codes.FAILURE


if __name__ == "__main__":
    sys.exit(main())
