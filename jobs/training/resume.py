"""What lets a preempted run resume exactly: the epoch journal, the seed-generator states kept beside Keras'
BackupAndRestore backup, and what the run directory says about an earlier attempt.

The backup itself is Keras' (weights, optimizer, epoch); docs/distributed.md says what a resume replays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jobs import contract
from jobs.fsutil import atomic_write_json, atomic_write_text

BACKUP_DIR = "backup"  # under the run directory: Keras' BackupAndRestore files and the seed states
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
                values = states._saved().get(str(backed_up_epochs(states.path.parent)))
                variables = SeedStates._variables(self.model)
                if isinstance(values, list) and len(values) == len(variables):
                    for v, value in zip(variables, values):
                        v.assign(np.asarray(value, dtype=v.dtype))

        return _RestoreSeedStates()



def backed_up_epochs(backup_dir: Path) -> int:
    """The epochs Keras 3's BackupAndRestore will restore (its training_metadata.json), 0 for a fresh run."""
    try:
        return int(json.loads((backup_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


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
