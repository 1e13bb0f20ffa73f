"""The training callbacks that watch a metric, on one "monitor improved" base (Keras' MonitorCallback idea).

The best checkpoint, early stopping, the plateau schedule and the epoch line all ask one question at the end of an
epoch: did the monitored value improve? `MonitorImproved` answers it once (mode, min_delta, NaN never improves)
and keeps the state a resumed run must get back (best value, best epoch, epochs waited): `replay(history)` feeds
the epochs of the run's journal through the same code with no model, so counters are where an uninterrupted run
has them and nothing (weights, learning rate) is written twice.

The classes are engine-free: `callback(keras)` wraps one in a Callback of the Keras that trains (Keras 3, or
tf-keras under MultiWorkerMirroredStrategy), imported late.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

from jobs.errors import BadInputError
from jobs.training.device_augmentation import served


class MonitorImproved:
    """State and decision of a callback that acts on whether `monitor` improved this epoch.

    Subclasses override `improved` / `not_improved` (called after the state is updated); `model` is None while
    replaying a resumed run's history.
    """

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise BadInputError(f"{type(self).__name__}: mode {mode!r} for monitor {monitor!r}; expected 'min' or 'max'")
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None  # 0-based
        self.wait = 0  # epochs since the last improvement

    def is_improvement(self, value: Optional[float]) -> bool:
        if value is None or math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value - self.min_delta > self.best
        return value + self.min_delta < self.best

    def update(self, epoch: int, value: Optional[float], model=None) -> None:
        if value is None:  # not logged this epoch: nothing to judge
            return
        if self.is_improvement(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.improved(epoch, value, model)
        else:
            self.wait += 1
            self.not_improved(epoch, value, model)

    def improved(self, epoch: int, value: float, model) -> None:
        pass

    def not_improved(self, epoch: int, value: float, model) -> None:
        pass

    def replay(self, history: dict[str, list[float]]) -> None:
        """Bring the state to where it was before a restart, from the journal's epochs (no model: no side effects)."""
        for epoch, value in enumerate(history.get(self.monitor, [])):
            self.update(epoch, float(value), None)

    # ---- the Keras side
    def epoch_begin(self, epoch: int, model) -> None:
        pass

    def epoch_end(self, epoch: int, logs: dict, model) -> None:
        value = logs.get(self.monitor)
        self.update(epoch, None if value is None else float(value), model)

    def callback(self, keras):
        watcher = self

        class _Monitor(keras.callbacks.Callback):
            watcher = self  # what a resumed run replays its history into (see jobs/training/loop.py)

            def on_epoch_begin(self, epoch, logs=None):
                watcher.epoch_begin(epoch, self.model)

            def on_epoch_end(self, epoch, logs=None):
                watcher.epoch_end(epoch, logs if logs is not None else {}, self.model)

        _Monitor.__name__ = type(self).__name__
        return _Monitor()


class BestWeights(MonitorImproved):
    """save_best_only checkpointing that every worker takes part in and only the chief writes.

    Reading weights can be a collective (sync-on-read variables such as batch-norm statistics are all-reduced
    across workers), so every worker reads at the same epochs; the decision is the same everywhere because the
    logged metrics are already all-reduced. The chief writes `checkpoints/best.weights.h5` in the Keras 3 format
    (through the Keras 3 twin when tf-keras trains), atomically. Every worker also keeps the weights in memory, so
    restoring the best epoch needs no shared file unless it predates a restart.
    """

    def __init__(self, monitor: str, mode: str, path: Path, write: bool, twin=None):
        super().__init__(monitor, mode)
        self.path, self.write, self.twin = path, write, twin
        self.snapshot: Optional[list] = None

    def improved(self, epoch: int, value: float, model) -> None:
        if model is not None:
            self.save(model)

    def save(self, model) -> None:
        from jobs.distribute import copy_weights

        if self.twin is not None:
            copy_weights(model, self.twin)
        self.snapshot = model.get_weights()
        if self.write:
            target = self.twin if self.twin is not None else served(model)
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
            served(model).load_weights(str(self.path))


class EarlyStop(MonitorImproved):
    """Keras' EarlyStopping decision (stop once `patience` epochs passed without an improvement of `min_delta`).

    The weights evaluated and exported are always the checkpoint monitor's best epoch (`BestWeights.restore` after
    fit), so restoring the stopping monitor's best weights at the end of fit, as Keras' flag does, would be
    overwritten at once: it is not done.
    """

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.stop_requested = False

    def not_improved(self, epoch: int, value: float, model) -> None:
        if self.wait >= self.patience and epoch > 0:
            self.stop_requested = True  # replayed: the first resumed epoch ends the run, as before the restart

    def epoch_end(self, epoch: int, logs: dict, model) -> None:
        super().epoch_end(epoch, logs, model)
        if self.stop_requested:
            model.stop_training = True


class PlateauSchedule(MonitorImproved):
    """Keras' ReduceLROnPlateau (min_delta 1e-4, no cooldown): after `patience` epochs without improvement the
    learning rate is multiplied by `factor`, down to `min_lr`.

    The rate is mirrored in `self.lr`, so a replay follows the same reductions without touching the optimizer,
    whose state (its already lowered rate included) the backup restored.
    """

    def __init__(self, monitor: str, mode: str, factor: float, patience: int, min_lr: float, learning_rate: float,
                 min_delta: float = 1e-4):
        super().__init__(monitor, mode, min_delta)
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.lr = float(learning_rate)

    @classmethod
    def from_spec(cls, spec, learning_rate: float) -> "PlateauSchedule":
        s, checkpoint = spec.training.schedule, spec.callbacks.checkpoint
        return cls(checkpoint.monitor, checkpoint.resolved_mode(), s.factor, s.patience, s.min_learning_rate,
                   learning_rate)

    def epoch_end(self, epoch: int, logs: dict, model) -> None:
        self.lr = float(model.optimizer.learning_rate)
        logs["learning_rate"] = self.lr  # as Keras' callback logs it
        super().epoch_end(epoch, logs, model)

    def not_improved(self, epoch: int, value: float, model) -> None:
        import numpy as np

        if self.wait >= self.patience and self.lr > np.float32(self.min_lr):
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.wait = 0
            if model is not None:
                rate = model.optimizer.learning_rate
                if hasattr(rate, "assign"):
                    rate.assign(self.lr)
                else:
                    model.optimizer.learning_rate = self.lr


class EpochLine(MonitorImproved):
    """One line per epoch a person can follow, marking the epochs where the checkpoint monitor improved."""

    def __init__(self, total_epochs: int, monitor: str, mode: str, train_count: int, out=None):
        super().__init__(monitor, mode)
        self.total_epochs, self.train_count = total_epochs, train_count
        self.out = out
        self.start = 0.0
        self.seconds: list[float] = []

    def epoch_begin(self, epoch: int, model) -> None:
        self.start = time.perf_counter()

    def epoch_end(self, epoch: int, logs: dict, model) -> None:
        took = time.perf_counter() - self.start
        self.seconds.append(took)
        before = self.best_epoch
        super().epoch_end(epoch, logs, model)
        parts = [f"epoch {epoch + 1:>3}/{self.total_epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key} {logs[key]:.4f}")
        lr = logs.get("learning_rate")
        if lr is not None:
            parts.append(f"lr {float(lr):.2e}")
        parts.append(f"{took:.1f}s")
        parts.append(f"{self.train_count / max(took, 1e-9):,.0f} img/s")
        if self.best_epoch == epoch and before != epoch:
            parts.append(f"* best {self.monitor}")
        print("  ".join(parts), file=self.out or sys.stdout, flush=True)
