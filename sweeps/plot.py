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
        if metric is None:  # a pruned trial at the last epoch it reached
            v = e.get("value") if e.get("status") == RunStatus.SUCCEEDED else e.get("epoch_value")
        else:
            v = (e.get("metrics") or {}).get(metric)
        return v if e.get("status") in (RunStatus.SUCCEEDED, RunStatus.PRUNED) and isinstance(v, (int, float)) else None

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
    pruned = any(e["status"] == RunStatus.PRUNED for e in done)
    fig.suptitle(f"{metric} per trial" + (" (grey: pruned, at the last epoch reached)" if pruned else ""))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


STUDY_PLOTS = {"importance": "importance", "parallel": "parallel"}


def plot_study(sweep_dir: Path, beside: Path) -> list[Path]:
    """Optuna's views of the study (optuna.visualization.matplotlib): the parameters' importance for the objective
    (fANOVA, needs at least two finished trials) and parallel coordinates of every finished trial, written beside
    `beside` as <stem>.importance.png and <stem>.parallel.png. Nothing when the sweep has no study or fewer than two
    finished trials."""
    from sweeps.study import load_study_readonly

    study = load_study_readonly(sweep_dir)
    if study is None:
        return []
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return []
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ExperimentalWarning": the matplotlib backend is marked experimental
        for kind, name in STUDY_PLOTS.items():
            ax = views.plot_param_importances(study) if kind == "importance" else views.plot_parallel_coordinate(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(8, 4.5)
            fig.tight_layout()
            path = Path(beside).with_name(f"{Path(beside).stem}.{name}.png")
            tmp = path.with_name(f".{path.name}.tmp")
            fig.savefig(tmp, format="png", dpi=100)
            plt.close(fig)
            tmp.replace(path)
            out.append(path)
    return out
