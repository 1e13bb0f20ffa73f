"""What every benchmark's report section is written with: number formatting, markdown tables, the figures canvas
and the generic section for a benchmark that renders nothing of its own.

Each bench module may define, beside its `main`:
    headlines(data) -> list[Headline]           rows of the summary table at the top of BENCHMARKS.md
    report_section(data, fig) -> str            its section's body (fig(name) -> the markdown of a figure it drew)
    figures(data, canvas) -> None               its PNGs, drawn on `canvas` (a `Canvas`)
    advice(results) -> list[str]                what its figures say about jobctl's defaults
`bench.run_all` only runs the modules and assembles these pieces in its registry's order. This module imports
nothing heavy (matplotlib only inside `Canvas`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional


class Headline(NamedTuple):
    question: str
    figure: str
    target: str
    met: Any  # True / False, or None where there is no target to meet


FigureLink = Callable[[str], str]


def fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def fmt_stat(s: Optional[dict], digits: int = 2, unit: str = "") -> str:
    """'1.84x (1.31–2.72, n=5)': the median and the spread of the repetitions."""
    if not s:
        return "—"
    if s.get("n", 1) <= 1:
        return f"{s['median']:.{digits}f}{unit}"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f}, n={s['n']})"


def dig(d: Any, *path: Any) -> Any:
    """d[path[0]][path[1]]..., or None where a key or index is missing (results JSON from older runs vary)."""
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def target_headlines(name: str, data: Any) -> list[Headline]:
    """Summary rows for any figure a module's JSON stores as {"target": ..., "met" or "meets_target": ...}."""
    if not isinstance(data, dict):
        return []
    rows = []
    for key, value in data.items():
        if isinstance(value, dict) and "target" in value and ("met" in value or "meets_target" in value):
            met = value.get("met", value.get("meets_target"))
            if isinstance(value.get("ratio_stat"), dict):
                fig = fmt_stat(value["ratio_stat"], unit="x")
            elif isinstance(value.get("overhead_ms"), dict):
                fig = fmt_stat(value["overhead_ms"], 3, " ms") + " added"
            else:
                fig = fmt(value.get("value", value.get("ratio", value.get("median"))))
            rows.append(Headline(f"{name}: {key.replace('_', ' ')}", fig, str(value["target"]), met))
    return rows


def generic_section(data: Any) -> str:
    """A benchmark without a section of its own: its figures as it reports them (scalars flattened)."""
    if not isinstance(data, dict):
        return "```\n" + json.dumps(data, indent=2)[:3000] + "\n```"
    doc = data.get("summary") or data.get("description")
    out = [str(doc), ""] if isinstance(doc, str) else []
    flat: list[list[str]] = []

    def walk(prefix: str, v: Any, depth: int) -> None:
        if isinstance(v, dict) and {"median", "min", "max"} <= set(v):
            flat.append([f"`{prefix}`", fmt_stat(v, 3)])
        elif isinstance(v, dict) and depth < 3:
            for k, sub in v.items():
                if k in ("machine", "samples") or k.startswith("_"):
                    continue
                walk(f"{prefix}.{k}" if prefix else k, sub, depth + 1)
        elif isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 80):
            flat.append([f"`{prefix}`", fmt(v, 3) if isinstance(v, float) else str(v)])

    walk("", data, 0)
    out.append(md_table(["figure", "value"], flat[:60]))
    if len(flat) > 60:
        out.append(f"\n({len(flat) - 60} more in bench/results.json)")
    return "\n".join(out)


class Canvas:
    """Where the modules draw their figures: one directory, one footer naming the machine, atomic PNG writes."""

    def __init__(self, fig_dir: Path, machine: dict):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.fig_dir = Path(fig_dir)
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self.machine = machine
        self.footer = (f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, TF "
                       f"{machine.get('tensorflow', '?')}; median, bars: min–max")
        self.written: list[str] = []

    def save(self, fig, name: str, footer: Optional[str] = None) -> None:
        fig.text(0.01, 0.01, footer or self.footer, fontsize=7, color="0.4")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        tmp = self.fig_dir / f".{name}.tmp"
        fig.savefig(tmp, format="png", dpi=110)
        self.plt.close(fig)
        tmp.replace(self.fig_dir / name)
        self.written.append(name)

    @staticmethod
    def bars(ax, labels, stats, color, target=None, target_label=None) -> None:
        """Median bars with min–max whiskers, a line at 1.0 (ratios) and an optional dashed target."""
        med = [s["median"] for s in stats]
        err = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
        pos = range(len(labels))
        ax.bar(pos, med, color=color, yerr=err, capsize=4)
        ax.set_xticks(list(pos), labels, fontsize=8)
        for p, v in zip(pos, med):
            ax.text(p, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.axhline(1.0, color="0.3", lw=0.8)
        if target:
            ax.axhline(target, color="tab:red", ls="--", lw=1, label=target_label)
            ax.legend(fontsize=8, loc="upper right")
