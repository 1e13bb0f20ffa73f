"""The human-facing files of a run: history plots, the model summary and its diagram."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from jobs.fsutil import atomic_write_text


def plot_history(history: dict[str, list[float]], run_dir: Path) -> list[Path]:
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


def write_summary_and_diagram(model, run_dir: Path) -> Optional[str]:
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

