"""`jobctl results`' PNG: the objective (or any metric) of each finished trial against each parameter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from jobs.contract import RunStatus
from sweeps.leaderboard import param_names

PLOT = "objective.png"


def plot_objective(entries: list[dict], path: Path, metric: Optional[str] = None) -> Optional[Path]:
    """One panel per parameter: the objective (or `metric`, any key of metrics.json such as test_loss) of each
    finished trial against the parameter's value (numbers on a log axis when they span a decade or more; other
    values as categories)."""

    def y(e):
        v = e.get("value") if metric is None else (e.get("metrics") or {}).get(metric)
        return v if e.get("status") in (RunStatus.SUCCEEDED, RunStatus.STOPPED) and isinstance(v, (int, float)) else None

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
        colors = ["tab:blue" if e["status"] == RunStatus.SUCCEEDED else "tab:gray" for e in done]
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
    stopped = any(e["status"] == RunStatus.STOPPED for e in done)
    fig.suptitle(f"{metric} per trial" + (" (grey: stopped early by hyperband, at a smaller budget)" if stopped else ""))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
