"""The leaderboard (`leaderboard.json`): written by the scheduler, read by `jobctl results` and `best` and by
`serving.ensemble` (`ensemble --sweep`). It is parsed here and nowhere else.

A list sorted best first: succeeded trials by the objective, then pruned, paused, running, pending and failed ones.
An entry: rank, trial, name, status, params, objective (the metric), direction, value, epochs (for a pruned trial:
the epoch it reached), epoch_value (the metric at its last epoch), attempt, number (its Optuna trial), metrics (the
numeric keys of metrics.json), export_path (only for succeeded trials: a pruned trial trained on a smaller budget
and must not reach an ensemble), run_dir, error.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from jobs import contract
from jobs.contract import LEADERBOARD_FILE, RunStatus
from jobs.fsutil import atomic_write_json
from sweeps.errors import NotEnoughTrialsError, SweepError
from sweeps.search import PAUSED, walk
from sweeps.state import METRIC_KEYS, STATE, SweepState, read_json

if TYPE_CHECKING:
    from sweeps.spec import Sweep

# Leaderboard order: finished and ranked first, failures last.
STATUS_ORDER = {RunStatus.SUCCEEDED: 0, RunStatus.PRUNED: 1, PAUSED: 2, RunStatus.RUNNING: 3, RunStatus.PENDING: 4,
                RunStatus.FAILED: 5}


# ------------------------------------------------------------------------------------------ leaderboard
def leaderboard(sweep: "Sweep", data: dict) -> list[dict]:
    """Every trial, best first: succeeded by the objective, then pruned (by the last epoch they reported),
    paused, running, pending, failed."""
    _, trial_states = walk(sweep, data["trials"], data["runs"])
    mode = data["objective"]["direction"]
    metric = data["objective"]["metric"]
    entries = []
    for trial_id, info in data["trials"].items():
        ts = trial_states[trial_id]
        rec = ts["record"] or {}
        status = ts["status"]
        metrics = rec.get("metrics") or {}
        entry = {
            "trial": trial_id,
            "name": info["name"],
            "status": status,
            "params": info["params"],
            "objective": metric,
            "direction": mode,
            "value": rec.get("value") if status == RunStatus.SUCCEEDED else None,
            # pruned, paused, failed: how far the trial got, and its metric there
            "epochs": metrics.get("epochs_run") if status == RunStatus.SUCCEEDED else rec.get("epoch"),
            "epoch_value": rec.get("epoch_value"),
            "attempt": ts.get("attempt"),
            "number": info.get("number"),
            "metrics": metrics,
            "export_path": rec.get("export_path") if status == RunStatus.SUCCEEDED else None,
            "run_dir": rec.get("run_dir"),
            "error": rec.get("error") if status == RunStatus.FAILED else None,
        }
        entries.append(entry)
    sign = -1.0 if mode == "max" else 1.0

    def key(e):
        v = e["value"] if e["value"] is not None else e["epoch_value"]
        return (STATUS_ORDER.get(e["status"], 9), sign * v if v is not None else math.inf, e["trial"])

    entries.sort(key=key)
    for i, e in enumerate(entries, 1):
        e["rank"] = i
    return entries


def write_leaderboard(sweep: "Sweep", state: SweepState) -> list[dict]:
    entries = leaderboard(sweep, state.data)
    atomic_write_json(state.sweep_dir / LEADERBOARD_FILE, entries, sort_keys=False)
    return entries


# ------------------------------------------------------------------------------------- reading results
def resolve_sweep_dir(arg: Union[str, Path]) -> Path:
    """A sweep directory, a sweep spec file (its sweep_dir) or a sweep name under ./artifacts/sweeps/."""
    p = Path(arg)
    if p.is_dir() and ((p / LEADERBOARD_FILE).is_file() or (p / STATE).is_file()):
        return p
    if p.is_file():
        from sweeps.spec import load_sweep

        return load_sweep(p).sweep_dir
    guess = contract.sweep_dir("artifacts", str(arg))
    if (guess / STATE).is_file() or (guess / LEADERBOARD_FILE).is_file():
        return guess
    raise SweepError(
        f"{arg}: not a sweep directory (expected {LEADERBOARD_FILE} or {STATE} inside), a sweep spec file, or a sweep "
        f"name under {contract.sweep_dir('artifacts', '')}"
    )


def load_leaderboard(sweep_dir: Path) -> list[dict]:
    path = Path(sweep_dir) / LEADERBOARD_FILE
    if not path.is_file():
        raise SweepError(f"{sweep_dir}: no {LEADERBOARD_FILE} yet; expected one once a trial has finished")
    entries = read_json(path)
    if not isinstance(entries, list):
        raise SweepError(f"{path}: expected a list of entries, received {type(entries).__name__}")
    return entries


def best_entries(entries: list[dict]) -> list[dict]:
    """The succeeded trials with an export, best first: stopped, pruned and failed trials never reach an ensemble.
    (An entry without a status, written by hand, counts by its export_path alone.)"""
    return [e for e in entries if isinstance(e, dict) and e.get("export_path")
            and e.get("status", RunStatus.SUCCEEDED) == RunStatus.SUCCEEDED]


def is_sweep_dir(path: Union[str, Path]) -> bool:
    return (Path(path) / LEADERBOARD_FILE).is_file()


def sweep_exports(sweep_dir: Union[str, Path]) -> list[Path]:
    """Every usable export of a sweep, best first, as paths (relative ones are taken from the sweep directory):
    what `ensemble --sweep` fuses. Raises SweepError when the leaderboard is unreadable or has none."""
    sweep_dir = Path(sweep_dir)
    entries = read_json(sweep_dir / LEADERBOARD_FILE)
    if isinstance(entries, dict):  # an older layout: {"entries": [...]}
        entries = entries.get("entries") or entries.get("trials") or []
    if not isinstance(entries, list):
        raise SweepError(f"{sweep_dir / LEADERBOARD_FILE}: expected a list of entries, received {type(entries).__name__}")
    usable = best_entries(entries)
    if not usable:
        raise SweepError(f"{sweep_dir / LEADERBOARD_FILE}: no succeeded entry has an export_path; received "
                         f"{len(entries)} entries")
    out = []
    for e in usable:
        p = Path(e["export_path"])
        out.append(p if p.is_absolute() or p.exists() else sweep_dir / p)
    return out


def best_exports(entries: list[dict], top: int) -> list[str]:
    """The export paths of the best `top` succeeded trials, best first (what an ensemble takes)."""
    usable = best_entries(entries)
    if top < 1:
        raise SweepError(f"--top: expected at least 1, received {top}")
    if top > len(usable):
        raise NotEnoughTrialsError(f"--top {top}: the sweep has only {len(usable)} succeeded trials with an export")
    return [e["export_path"] for e in usable[:top]]


def param_names(entries: list[dict]) -> list[str]:
    names: list[str] = []
    for e in entries:
        for k in e.get("params", {}):
            if k not in names:
                names.append(k)
    return names


def to_csv(entries: list[dict]) -> str:
    params = param_names(entries)
    metric_keys = [k for k in METRIC_KEYS if any(k in e.get("metrics", {}) for e in entries)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "trial", "status", "objective", "value", *params, *metric_keys, "export_path", "error"])
    for e in entries:
        w.writerow([
            e["rank"], e["trial"], e["status"], e["objective"], _cell(e.get("value")),
            *[_cell(e["params"].get(p)) for p in params],
            *[_cell(e.get("metrics", {}).get(k)) for k in metric_keys],
            e.get("export_path") or "", e.get("error") or "",
        ])
    return buf.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


