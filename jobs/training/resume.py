"""What lets a preempted run resume exactly: the epoch journal, the seed-generator states kept beside Keras'
BackupAndRestore backup, and what the run directory says about an earlier attempt.

The backup itself is Keras' (weights, optimizer, epoch); docs/distributed.md says what a resume replays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from jobs import contract
from jobs.fsutil import atomic_write_json, atomic_write_text

BACKUP_DIR = "backup"  # under the run directory: Keras' BackupAndRestore files and the seed states
KERAS_METADATA_FILE = "training_metadata.json"  # BackupAndRestore's: {"epoch": finished epochs, ...}
HISTORY_FILE = "history.json"


class EpochJournal:
    """The history of a run across restarts: one entry per finished epoch, written after every epoch.

    `fit` restarted by BackupAndRestore only reports the epochs it ran itself; the journal (history.json and
    history.csv, rewritten atomically by the chief) keeps the earlier ones. On the first epoch of a resumed fit,
    entries from that epoch on are dropped: they belonged to an epoch that was cut short of its backup and is
    being trained again, so no epoch is ever listed twice. It sits before BackupAndRestore in the callback list,
    so an epoch in the backup is always in the journal.
    """

    def __init__(self, shared_run_dir: Path, write_dir: Path):
        self.read_path = shared_run_dir / HISTORY_FILE
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
        atomic_write_json(self.write_dir / HISTORY_FILE, {"epochs": epochs, **hist, "complete": complete})
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

    @staticmethod
    def values(model) -> list:
        return [np.asarray(v).tolist() for v in SeedStates._variables(model)]

    @staticmethod
    def assign(model, values) -> None:
        variables = SeedStates._variables(model)
        if isinstance(values, list) and len(values) == len(variables):
            for v, value in zip(variables, values):
                v.assign(np.asarray(value, dtype=v.dtype))

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
                values = SeedStates.values(self.model)
                kept = {k: v for k, v in states._saved().items() if k == str(epoch)}  # the previous backup's
                atomic_write_json(states.path, {**kept, str(epoch + 1): values})

        return _WriteSeedStates()

    def restorer(self, keras):
        """Goes after BackupAndRestore, whose on_train_begin restores the weights and names the epoch."""
        states = self

        class _RestoreSeedStates(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                position = BackupPosition.read(states.path.parent)
                # A mid-epoch backup carries its own states; an epoch's end has them in seed_states.json.
                values = position.seed_states if position.batches_done else states._saved().get(str(position.epoch))
                SeedStates.assign(self.model, values)

        return _RestoreSeedStates()


def backed_up_epochs(backup_dir: Path) -> int:
    """The epochs Keras 3's BackupAndRestore will restore (its training_metadata.json), 0 for a fresh run."""
    return BackupPosition.read(backup_dir).epoch


@dataclass
class BackupPosition:
    """Where the backup in `backup_dir` stands: `epoch` epochs finished, and `batches_done` batches of the next one
    (0: the backup is an epoch's end). A mid-epoch backup also holds the seed-generator states and the running
    training metrics of that step, so the rest of the epoch trains and logs as it would have."""

    epoch: int = 0
    batches_done: int = 0
    seed_states: Optional[list] = None
    metric_states: Optional[list] = None

    @classmethod
    def read(cls, backup_dir: Path) -> "BackupPosition":
        try:
            saved = json.loads((backup_dir / KERAS_METADATA_FILE).read_text())
            return cls(int(saved["epoch"]), int(saved.get("batches_done", 0)), saved.get("seed_states"),
                       saved.get("metric_states"))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()


def _metric_values(model) -> list:
    return [np.asarray(v).tolist() for v in model.metrics_variables]


def backup_callback(keras, backup_dir: Path, every_steps: Optional[int] = None, legacy: bool = False):
    """Keras' BackupAndRestore, at epoch ends and, with `every_steps`, every that many training steps.

    Keras 3 (15) restores a mid-epoch backup by restarting its epoch from the first batch, the weights having seen
    the batches before the backup already. Here the backup also records how many batches of the epoch it holds
    (`BackupPosition`), and the training loop trains only the rest of that epoch (jobs/training/loop.py). Each write
    is one step SIGTERM does not cut in two (weights and position always match).
    """
    if legacy:  # tf-keras under MultiWorkerMirroredStrategy: epoch ends, its own temporary dirs per worker
        return keras.callbacks.BackupAndRestore(str(backup_dir), delete_checkpoint=False)
    from jobs.distribute import uninterruptible

    class _Backup(keras.callbacks.BackupAndRestore):
        batch_offset = 0  # batches of the current epoch trained before this fit (set by a mid-epoch resume)
        _epoch_now = 0
        _mid_epoch = False

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_now = epoch  # Keras counts epochs only at their ends: wrong for a resumed fit's first

        def on_train_batch_end(self, batch, logs=None):
            self._mid_epoch = True
            super().on_train_batch_end(batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            self._mid_epoch = False
            super().on_epoch_end(epoch, logs)
            if self.save_freq != "epoch":  # Keras saves only every N batches then: epoch ends are backups too
                self._save_model()
            self.batch_offset = 0

        def _save_model(self):
            with uninterruptible():
                super()._save_model()
                if self._mid_epoch:
                    atomic_write_json(Path(self._training_metadata_path), {
                        "epoch": self._epoch_now, "batch": self._last_batch_seen,
                        "batches_done": self.batch_offset + self._last_batch_seen + 1,
                        "seed_states": SeedStates.values(self.model), "metric_states": _metric_values(self.model),
                    })

    return _Backup(str(backup_dir), save_freq=every_steps or "epoch", delete_checkpoint=False, double_checkpoint=True)


def restore_epoch_metrics(keras, position: BackupPosition):
    """On the resumed epoch's start, the training metrics' running totals of the batches before the backup: the
    epoch's logged loss and accuracy are then those of all its batches, as in an uninterrupted run."""

    class _RestoreMetrics(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            variables = self.model.metrics_variables
            values = position.metric_states
            if epoch == position.epoch and isinstance(values, list) and len(values) == len(variables):
                for v, value in zip(variables, values):
                    v.assign(np.asarray(value, dtype=v.dtype))

    return _RestoreMetrics()


def read_metrics(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / contract.METRICS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def finished_epochs(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / HISTORY_FILE).read_text()).get("epochs", []))
    except (OSError, ValueError):
        return 0
