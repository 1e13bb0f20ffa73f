"""Sweep state (`sweep.json`) and results (`leaderboard.json`), both written atomically in the sweep directory.

    <sweep_dir>/
      sweep.json          # trials, every run record; what a resumed sweep reads
      leaderboard.json    # a list sorted best first (the ensemble reads it: entries with `export_path`)
      trials/<trial>/r<rung>.yaml  r<rung>.log    # local backend: the resolved spec and the trial's output
      objective.png       # `jobctl results`: the objective against each parameter

A leaderboard entry: rank, trial, name, status, params, objective (the metric), direction, value, epochs,
metrics (the numeric keys of metrics.json), export_path (only for succeeded trials: a stopped Hyperband trial
trained on a smaller budget and must not reach an ensemble), run_dir, error.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from jobs.fsutil import atomic_write_json
from jobs.sweep_search import parse_run_key, walk

if TYPE_CHECKING:
    from jobs.sweep_spec import Sweep

STATE = "sweep.json"
LEADERBOARD = "leaderboard.json"
PLOT = "objective.png"
STATE_VERSION = 1
METRIC_KEYS = (
    "best_val_accuracy", "best_val_loss", "best_monitor_value", "test_accuracy", "test_loss", "best_epoch",
    "epochs_run", "wall_time_seconds", "fit_seconds", "images_per_second",
)
# Leaderboard order: finished and ranked first, failures last.
STATUS_ORDER = {"succeeded": 0, "stopped": 1, "running": 2, "pending": 3, "failed": 4}


class SweepError(Exception):
    """A sweep that cannot start or be read; the message says what was found and what to do."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def fingerprint(sweep: "Sweep") -> str:
    """What decides the trials: a resumed sweep must be the same sweep, or its finished runs mean nothing.
    `max_trials` is left out: raising it on a random sweep adds trials (the seeded draws start the same way),
    and `SweepState.open` checks that every recorded trial still has its parameters."""
    data = {
        "spec": sweep.spec.model_dump(
            mode="json", exclude={"parallelism", "threads_per_trial", "sweep_dir", "artifacts_dir", "max_trials"}
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
            added = [t for t in sweep.trials if t.id not in data.get("trials", {})]
            for t in added:
                data["trials"][t.id] = {"name": sweep.trial_name(t.id), "params": t.params, "bracket": t.bracket}
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
            "parameters": {k: p.model_dump(mode="json") for k, p in sweep.spec.parameters.items()},
            "artifacts_dir": str(sweep.artifacts_dir),
            "trials": {t.id: {"name": sweep.trial_name(t.id), "params": t.params, "bracket": t.bracket} for t in sweep.trials},
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

    run_dir = Path(artifacts_dir) / "runs" / trial_name / run_id
    path = run_dir / "metrics.json"
    metrics: dict = {}
    if path.is_file():
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            metrics = {"status": "failed", "error": f"unreadable metrics.json: {exc}"}
    status = metrics.get("status")
    out: dict[str, Any] = {"run_dir": str(run_dir.resolve()), "exit_code": exit_code, "finished": now()}
    if status == "interrupted" or exit_code == exit_codes.PREEMPTED:
        out.update(status="interrupted", error=metrics.get("error") or "interrupted")
        return out
    if status == "succeeded" and (exit_code in (None, 0)):
        value = metrics.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            out.update(status="failed", error=f"metrics.json has no finite {metric!r} (received {value!r})")
        else:
            out.update(status="succeeded", value=float(value))
        out["metrics"] = {k: metrics[k] for k in METRIC_KEYS if k in metrics}
        out["export_path"] = local_export_path(artifacts_dir, metrics.get("export_path"))
        return out
    error = metrics.get("error")
    if not error:
        tail = _log_tail(log_path)
        error = tail or (f"no metrics.json at {path}" if not metrics else f"metrics.json status {status!r}")
    if exit_code not in (None, 0):
        desc = exit_codes.DESCRIPTIONS.get(exit_code, "killed by a signal" if exit_code < 0 else "unknown")
        error = f"exit code {exit_code} ({desc}): {error}"
    out.update(status="failed", error=error)
    return out


def local_export_path(artifacts_dir: Path, export_path: Optional[str]) -> Optional[str]:
    """The export as seen from here, absolute. A pod writes `/artifacts/models/<name>/<version>` on the shared
    volume, which this machine may mount elsewhere: the last three parts are re-rooted on `artifacts_dir`."""
    if not export_path:
        return None
    p = Path(export_path)
    if len(p.parts) >= 3 and p.parts[-3] == "models":
        p = Path(artifacts_dir) / "models" / p.parts[-2] / p.parts[-1]
    return str(p.resolve())


def _log_tail(log_path: Optional[Path], lines: int = 3) -> str:
    if not log_path or not Path(log_path).is_file():
        return ""
    text = Path(log_path).read_text(errors="replace").strip().splitlines()
    errors = [l for l in text if l.startswith("error:")]
    return (errors[-1] if errors else " | ".join(text[-lines:]))[:2000]


# ------------------------------------------------------------------------------------------ leaderboard
def leaderboard(sweep: "Sweep", data: dict) -> list[dict]:
    """Every trial, best first: succeeded by the objective, then stopped, running, pending, failed."""
    _, trial_states = walk(sweep, data["runs"])
    mode = data["objective"]["direction"]
    metric = data["objective"]["metric"]
    # Each trial's record of its highest rung that has one (for hyperband, its largest budget): one pass.
    last: dict[str, tuple[int, dict]] = {}
    for key, rec in data["runs"].items():
        trial_id, rung = parse_run_key(key)
        if trial_id not in last or rung > last[trial_id][0]:
            last[trial_id] = (rung, rec)
    entries = []
    for trial_id, info in data["trials"].items():
        ts = trial_states.get(trial_id, {"status": "pending", "rung": 0, "epochs": None})
        rec = last[trial_id][1] if trial_id in last else None
        status = ts["status"]
        entry = {
            "trial": trial_id,
            "name": info["name"],
            "status": status,
            "params": info["params"],
            "objective": metric,
            "direction": mode,
            "value": rec.get("value") if rec and status in ("succeeded", "stopped") else None,
            "epochs": (rec or {}).get("metrics", {}).get("epochs_run"),
            "rung": ts.get("rung"),
            "metrics": (rec or {}).get("metrics", {}),
            "export_path": (rec or {}).get("export_path") if status == "succeeded" else None,
            "run_dir": (rec or {}).get("run_dir"),
            "error": (rec or {}).get("error") if status == "failed" else None,
        }
        entries.append(entry)
    sign = -1.0 if mode == "max" else 1.0

    def key(e):
        v = e["value"]
        return (STATUS_ORDER.get(e["status"], 9), sign * v if v is not None else math.inf, e["trial"])

    entries.sort(key=key)
    for i, e in enumerate(entries, 1):
        e["rank"] = i
    return entries


def write_leaderboard(sweep: "Sweep", state: SweepState) -> list[dict]:
    entries = leaderboard(sweep, state.data)
    atomic_write_json(state.sweep_dir / LEADERBOARD, entries, sort_keys=False)
    return entries


# ------------------------------------------------------------------------------------- reading results
def resolve_sweep_dir(arg: Union[str, Path]) -> Path:
    """A sweep directory, a sweep spec file (its sweep_dir) or a sweep name under ./artifacts/sweeps/."""
    p = Path(arg)
    if p.is_dir() and ((p / LEADERBOARD).is_file() or (p / STATE).is_file()):
        return p
    if p.is_file():
        from jobs.sweep_spec import load_sweep

        return load_sweep(p).sweep_dir
    guess = Path("artifacts") / "sweeps" / str(arg)
    if (guess / STATE).is_file() or (guess / LEADERBOARD).is_file():
        return guess
    raise SweepError(
        f"{arg}: not a sweep directory (expected {LEADERBOARD} or {STATE} inside), a sweep spec file, or a sweep "
        f"name under {Path('artifacts') / 'sweeps'}"
    )


def load_leaderboard(sweep_dir: Path) -> list[dict]:
    path = Path(sweep_dir) / LEADERBOARD
    if not path.is_file():
        raise SweepError(f"{sweep_dir}: no {LEADERBOARD} yet; expected one once a trial has finished")
    entries = read_json(path)
    if not isinstance(entries, list):
        raise SweepError(f"{path}: expected a list of entries, received {type(entries).__name__}")
    return entries


def best_exports(entries: list[dict], top: int) -> list[str]:
    """The export paths of the best `top` succeeded trials, best first (what an ensemble takes)."""
    usable = [e for e in entries if e.get("status") == "succeeded" and e.get("export_path")]
    if top < 1:
        raise SweepError(f"--top: expected at least 1, received {top}")
    if top > len(usable):
        raise SweepError(f"--top {top}: the sweep has only {len(usable)} succeeded trials with an export")
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


def plot_objective(entries: list[dict], path: Path, metric: Optional[str] = None) -> Optional[Path]:
    """One panel per parameter: the objective (or `metric`, any key of metrics.json such as test_loss) of each
    finished trial against the parameter's value (numbers on a log axis when they span a decade or more; other
    values as categories)."""

    def y(e):
        v = e.get("value") if metric is None else (e.get("metrics") or {}).get(metric)
        return v if e.get("status") in ("succeeded", "stopped") and isinstance(v, (int, float)) else None

    done = [e for e in entries if y(e) is not None]
    params = param_names(entries)
    if not done or not params:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or done[0]["objective"]
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], params):
        xs = [e["params"].get(name) for e in done]
        ys = [y(e) for e in done]
        colors = ["tab:blue" if e["status"] == "succeeded" else "tab:gray" for e in done]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if numeric:
            ax.scatter(xs, ys, c=colors)
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:
            cats = sorted({json.dumps(x) if isinstance(x, (list, dict)) else str(x) for x in xs})
            idx = [cats.index(json.dumps(x) if isinstance(x, (list, dict)) else str(x)) for x in xs]
            ax.scatter(idx, ys, c=colors)
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    stopped = any(e["status"] == "stopped" for e in done)
    fig.suptitle(f"{metric} per trial" + (" (grey: stopped early by hyperband, at a smaller budget)" if stopped else ""))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
