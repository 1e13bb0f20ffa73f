"""Sweep state (`sweep.json`) in the sweep directory, written atomically after every change, and what a finished
run's artifacts say about it.

    <sweep_dir>/
      sweep.json          # trials, every run record; what a resumed sweep reads
      leaderboard.json    # sweeps/leaderboard.py
      trials/<trial>/r<rung>.yaml  r<rung>.log    # local backend: the resolved spec and the trial's output
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from jobs import contract
from jobs.contract import METRICS_FILE, RunStatus
from jobs.fsutil import atomic_write_json
from sweeps.errors import SweepError
from sweeps.search import INTERRUPTED, parse_run_key

if TYPE_CHECKING:
    from sweeps.spec import Sweep

STATE = "sweep.json"
STATE_VERSION = 1
METRIC_KEYS = (
    "best_val_accuracy", "best_val_loss", "best_monitor_value", "test_accuracy", "test_loss", "best_epoch",
    "epochs_run", "wall_time_seconds", "fit_seconds", "images_per_second",
)
# Leaderboard order: finished and ranked first, failures last.


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def fingerprint(sweep: "Sweep") -> str:
    """What decides the trials: a resumed sweep must be the same sweep, or its finished runs mean nothing.
    `max_trials` is left out: raising it on a random sweep adds trials (the seeded draws start the same way),
    and `SweepState.open` checks that every recorded trial still has its parameters."""
    data = {
        "spec": sweep.spec.model_dump(
            mode="json", exclude={"parallelism", "threads_per_trial", "sweep_dir", "artifacts_dir", "max_trials", "retries"}
        ),
        "base": sweep.base_data,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SweepState:
    """The sweep's memory: trials and run records, saved atomically after every change."""

    def __init__(self, sweep_dir: Path, data: dict):
        self.sweep_dir = Path(sweep_dir)
        self.data = data

    @property
    def runs(self) -> dict[str, dict]:
        return self.data["runs"]

    @property
    def trials(self) -> dict[str, dict]:
        """Trial id -> {"name", "params", "number" (its Optuna trial number, once asked)}."""
        return self.data["trials"]

    @classmethod
    def open(cls, sweep: "Sweep", restart: bool = False) -> "SweepState":
        path = Path(sweep.sweep_dir) / STATE
        fp = fingerprint(sweep)
        if path.is_file() and not restart:
            data = read_json(path)
            if data.get("fingerprint") != fp:
                raise SweepError(
                    f"{path}: this sweep directory holds a different sweep (fingerprint {data.get('fingerprint')}, "
                    f"this spec {fp}): the parameters, algorithm, objective or base spec changed. Expected the same "
                    "spec to resume; pass --restart to start over or give the sweep another name"
                )
            if sweep.planned:  # proposed trials (tpe, gp) live in the study: nothing to compare them with
                new = {t.id: t for t in sweep.trials}
                recorded = {parse_run_key(key)[0] for key in data.get("runs", {})}
                for tid in sorted(recorded):
                    old = (data.get("trials") or {}).get(tid, {}).get("params")
                    if tid not in new or _canonical(old) != _canonical(new[tid].params):
                        raise SweepError(
                            f"{path}: trial {tid} was recorded with {old} but this spec "
                            + (f"gives it {new[tid].params}" if tid in new else "has no such trial")
                            + "; expected the same trials to resume (a random sweep may only grow max_trials). "
                            "Pass --restart to start over or give the sweep another name"
                        )
                for t in sweep.trials:
                    data["trials"].setdefault(t.id, {"name": sweep.trial_name(t.id), "params": t.params})
                # Trials the spec no longer has (max_trials lowered, never run) leave the leaderboard.
                data["trials"] = {tid: info for tid, info in data["trials"].items() if tid in new}
            return cls(path.parent, data)
        data = {
            "version": STATE_VERSION,
            "name": sweep.name,
            "source": sweep.source,
            "fingerprint": fp,
            "created": now(),
            "objective": {"metric": sweep.spec.objective.metric, "direction": sweep.spec.objective.mode},
            "algorithm": sweep.spec.algorithm.model_dump(mode="json"),
            "pruner": sweep.spec.pruner.model_dump(mode="json"),
            "parameters": {k: p.model_dump(mode="json") for k, p in sweep.spec.parameters.items()},
            "artifacts_dir": str(sweep.artifacts_dir),
            "trials": {t.id: {"name": sweep.trial_name(t.id), "params": t.params} for t in sweep.trials},
            "runs": {},
        }
        state = cls(Path(sweep.sweep_dir), data)
        state.save()
        return state

    def save(self) -> None:
        self.data["updated"] = now()
        # Key order kept (not sorted): parameters read in the order the sweep spec lists them.
        atomic_write_json(self.sweep_dir / STATE, self.data, sort_keys=False)


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SweepError(f"{path}: unreadable ({exc.__class__.__name__}: {exc})") from None


# ------------------------------------------------------------------------------------- run outcomes
def read_run_outcome(
    artifacts_dir: Path, trial_name: str, run_id: str, metric: str, *, exit_code: Optional[int] = None,
    log_path: Optional[Path] = None,
) -> dict:
    """A finished run as a record update: status, value, metrics, export_path, error.

    Exit code and metrics.json must agree on success; a run that died without metrics.json (killed, out of
    memory) is failed with the tail of its log as the error. Interrupted and preempted runs are "interrupted":
    a resumed sweep runs them again.
    """
    from jobs import exit_codes

    run_dir = contract.run_dir(artifacts_dir, trial_name, run_id)
    path = run_dir / contract.METRICS_FILE
    metrics: dict = {}
    if path.is_file():
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            metrics = {"status": RunStatus.FAILED, "error": f"unreadable {METRICS_FILE}: {exc}"}
    status = metrics.get("status")
    out: dict[str, Any] = {"run_dir": str(run_dir.resolve()), "exit_code": exit_code, "finished": now()}
    if status in (INTERRUPTED, RunStatus.PREEMPTED) or exit_code == exit_codes.PREEMPTED:
        out.update(status=INTERRUPTED, error=metrics.get("error") or INTERRUPTED)
        return out
    if status == RunStatus.SUCCEEDED and (exit_code in (None, 0)):
        value = metrics.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            out.update(status=RunStatus.FAILED, error=f"{METRICS_FILE} has no finite {metric!r} (received {value!r})")
        else:
            out.update(status=RunStatus.SUCCEEDED, value=float(value))
        out["metrics"] = {k: metrics[k] for k in METRIC_KEYS if k in metrics}
        out["export_path"] = local_export_path(artifacts_dir, metrics.get("export_path"))
        return out
    error = metrics.get("error")
    if not error:
        tail = _log_tail(log_path)
        error = tail or (f"no {METRICS_FILE} at {path}" if not metrics else f"{METRICS_FILE} status {status!r}")
    if exit_code not in (None, 0):
        desc = exit_codes.DESCRIPTIONS.get(exit_code, "killed by a signal" if exit_code < 0 else "unknown")
        error = f"exit code {exit_code} ({desc}): {error}"
    out.update(status=RunStatus.FAILED, error=error)
    return out


def local_export_path(artifacts_dir: Path, export_path: Optional[str]) -> Optional[str]:
    """The export as seen from here, absolute. A pod writes `/artifacts/models/<name>/<version>` on the shared
    volume, which this machine may mount elsewhere: the last three parts are re-rooted on `artifacts_dir`."""
    if not export_path:
        return None
    p = Path(export_path)
    if len(p.parts) >= 3 and p.parts[-3] == contract.MODELS_DIR:
        p = contract.model_base_path(artifacts_dir, p.parts[-2]) / p.parts[-1]
    return str(p.resolve())


def _log_tail(log_path: Optional[Path], lines: int = 3) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    text = Path(log_path).read_text(errors="replace").strip().splitlines()
    errors = [l for l in text if l.startswith("error:")]
    return (errors[-1] if errors else " | ".join(text[-lines:]))[:2000]




HISTORY_FILE = "history.json"  # jobs.train rewrites it (atomically) after every epoch


def read_history(artifacts_dir: Path, trial_name: str, run_id: str) -> dict[str, list]:
    """A run's per-epoch history so far ({} before its first epoch, or while it is being replaced)."""
    path = contract.run_dir(artifacts_dir, trial_name, run_id) / HISTORY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def epochs_reached(history: dict) -> int:
    epochs = history.get("epochs")
    return len(epochs) if isinstance(epochs, list) else 0


def backed_up_epochs(artifacts_dir: Path, trial_name: str, run_id: str) -> int:
    """The epochs the run's BackupAndRestore backup holds (Keras 3 writes training_metadata.json after the weights
    and the optimizer): what a run stopped now resumes from. jobs.train writes history.json before the backup, so a
    rung seen in the history is not yet safe to pause at."""
    path = contract.run_dir(artifacts_dir, trial_name, run_id) / "backup" / "training_metadata.json"
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
