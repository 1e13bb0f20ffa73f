"""`make bench`: run every benchmark in bench/, then write BENCHMARKS.md, PNG figures and a JSON of the raw figures.

    .venv/bin/python -m bench.run_all                      # full run: BENCHMARKS.md, bench/figures/, bench/results.json
    .venv/bin/python -m bench.run_all --quick              # smoke run; writes under bench/out/quick/ only
    .venv/bin/python -m bench.run_all --only pipeline cli  # a subset (the report says which ran)
    .venv/bin/python -m bench.run_all --report-only        # re-render the report from bench/results.json

Each benchmark runs in its own process (a fresh interpreter: no TensorFlow state carried from one to the next)
through its public command line, and writes its own JSON; this module only collects them, and assembles the
report from the sections, headlines and figures each module renders itself (see bench/report.py). A benchmark that is
absent, fails or times out is reported as such in the report; the others still count.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from bench.common import OUT_DIR, ROOT, bench_env, machine_info, run_process, write_json
from bench.report import Canvas, FigureLink, Headline, dig, fmt, generic_section, md_table, target_headlines


@dataclass
class Benchmark:
    name: str
    module: str
    title: str
    owner: str
    full_args: list[str] = field(default_factory=list)
    quick_args: list[str] = field(default_factory=lambda: ["--quick"])
    timeout: float = 900.0

    @property
    def path(self) -> Path:
        return ROOT / (self.module.replace(".", "/") + ".py")


# In report order. The interfaces are the modules' own (`--quick`, `--out`; bench_render takes `--runs`).
BENCHMARKS = [
    Benchmark("pipeline", "bench.bench_pipeline", "Training input pipeline and epoch time", "training (issue 7)"),
    Benchmark("accuracy", "bench.bench_accuracy", "Accuracy of the seed recipes and their ensemble", "issue 7"),
    Benchmark("distribute", "bench.bench_distribute", "Distribution overhead", "distributed training"),
    Benchmark("serving", "bench.bench_serving", "Serving", "serving"),
    Benchmark("client", "bench.bench_client", "The TensorFlow-free client vs tensorflow-serving-api", "serving (issue 15)",
              timeout=600),
    Benchmark("cli", "bench.bench_cli", "CLI start-up and peak memory", "issue 7"),
    Benchmark("render", "bench.bench_render", "`jobctl render` (Kubernetes manifests)", "kubernetes",
              full_args=["--runs", "7"], quick_args=["--runs", "1"], timeout=300),
    # TPE+ASHA over two spaces x 3 seeds, warm vs cold Hyperband x 3, parallel vs sequential x 3: ~30 min
    Benchmark("sweep", "bench.bench_sweep", "Local sweeps: TPE+ASHA budget, warm vs cold Hyperband, parallel trials",
              "sweeps (issue 17)", timeout=3600),
    Benchmark("data", "bench.bench_data", "Data at scale: memory, input throughput per core, cores per GPU",
              "data (issue 14)", timeout=1800),
]


def discover() -> list[Benchmark]:
    """The known benchmarks plus any other bench/bench_*.py (run with `--out`, as the convention asks)."""
    known = {b.module for b in BENCHMARKS}
    extra = [
        Benchmark(p.stem.removeprefix("bench_"), f"bench.{p.stem}", p.stem, "unknown")
        for p in sorted((ROOT / "bench").glob("bench_*.py"))
        if f"bench.{p.stem}" not in known
    ]
    return BENCHMARKS + extra


def module_summary(path: Path) -> Optional[str]:
    """The first paragraph of a benchmark module's docstring (read, not imported): what it measures, in its
    owner's words."""
    import ast

    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError):
        return None
    if not doc:
        return None
    paragraphs = doc.split("\n\n")
    text = paragraphs[0].strip()
    if text.endswith(":") and len(paragraphs) > 1:  # "...each a ratio:" followed by its list
        text += " " + paragraphs[1]
    return " ".join(text.split())


def run_benchmark(b: Benchmark, quick: bool, out_dir: Path, log_dir: Path) -> dict[str, Any]:
    if not b.path.is_file():
        return {"status": "missing", "detail": f"{b.path.relative_to(ROOT)} does not exist"}
    out = out_dir / f"{b.name}.json"
    out.unlink(missing_ok=True)
    args = list(b.quick_args if quick else b.full_args)
    cmd = [sys.executable, "-m", b.module, *args, "--out", str(out)]
    print(f"bench: {b.name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    r = run_process(cmd, cwd=ROOT, env=bench_env(MPLBACKEND="Agg"), timeout=b.timeout)
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{b.name}.log").write_text(f"$ {' '.join(cmd)}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}")
    entry: dict[str, Any] = {"about": module_summary(b.path), "seconds": round(r.seconds, 1), "command": "python -m " + " ".join([b.module, *args])}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        timed_out = r.seconds >= b.timeout
        return {**entry, "status": "timeout" if timed_out else "failed", "detail": f"exit {r.returncode}: {tail}"}
    data = None
    if out.is_file():
        try:
            data = json.loads(out.read_text())
        except json.JSONDecodeError as exc:
            return {**entry, "status": "failed", "detail": f"{out}: not JSON ({exc})"}
    else:
        try:  # a module that only prints its JSON
            data = json.loads(r.stdout)
        except json.JSONDecodeError:
            return {**entry, "status": "failed", "detail": "exit 0 but no JSON written or printed"}
    return {**entry, "status": "ok", "data": data}

# ================================================================================================ report
def report_hooks(b: Benchmark):
    """The module's report functions (bench.report's docstring lists them); importing a bench module is light."""
    try:
        return importlib.import_module(b.module)
    except ImportError:
        return None


def headline(results: dict) -> list[Headline]:
    """The summary rows: each benchmark's own headlines, in the order the benchmarks ran."""
    known = {bm.name: bm for bm in discover()}
    rows: list[Headline] = []
    for name, entry in results.get("benchmarks", {}).items():
        data = entry.get("data")
        if not isinstance(data, dict):
            continue
        module = report_hooks(known[name]) if name in known else None
        rows += module.headlines(data) if hasattr(module, "headlines") else target_headlines(name, data)
    return rows


def section(b: Optional[Benchmark], entry: dict, fig: FigureLink) -> list[str]:
    """One benchmark's section body: its own `report_section`, or its figures flattened."""
    data = entry.get("data") or {}
    module = report_hooks(b) if b else None
    if hasattr(module, "report_section"):
        return [module.report_section(data, fig), ""]
    out = [f"*From the module's own description:* {entry['about']}", ""] if entry.get("about") else []
    own = fig(f"{b.name}.png") if b else ""
    return out + ([generic_section(data), "", own, ""] if own else [generic_section(data), ""])


def defaults_advice(results: dict) -> list[str]:
    """What the figures say about jobctl's defaults, from the modules that have advice to give."""
    out: list[str] = []
    for b in discover():
        module = report_hooks(b) if b.name in results.get("benchmarks", {}) else None
        if hasattr(module, "advice"):
            out += module.advice(results)
    return out


def make_figures(results: dict, fig_dir: Path) -> list[str]:
    canvas = Canvas(fig_dir, results.get("machine", {}))
    known = {bm.name: bm for bm in discover()}
    for name, entry in results.get("benchmarks", {}).items():
        module = report_hooks(known[name]) if name in known else None
        if hasattr(module, "figures") and isinstance(entry.get("data"), dict):
            module.figures(entry["data"], canvas)
    return canvas.written


def render_report(results: dict, figures_rel: str = "bench/figures") -> str:
    """BENCHMARKS.md from the collected results (pure: tests feed it synthetic results)."""
    m = results.get("machine", {})
    b = results.get("benchmarks", {})
    fig_names = set(results.get("figures", []))

    def fig(name: str) -> str:
        return f"![{name}]({figures_rel}/{name})" if name in fig_names else ""

    quick = results.get("quick")
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench.run_all`) — do not edit by hand."
        + (" **Smoke run (--quick): the figures below mean nothing.**" if quick else ""),
        "",
        "Two questions: is jobctl faster than what the seed notebooks do, and do its models get as good? Every "
        "figure is measured against its baseline **in the same run, interleaved repetition by repetition**, and is "
        "shown as the median with the spread (min–max) of the repetitions. The machine is small and was shared "
        "with other work while this ran, so absolute times are noisy; the ratios are the point.",
        "",
        f"**Machine:** {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gb')} GB RAM, no GPU; {m.get('os')}; "
        f"Python {m.get('python')}, TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, tf-keras "
        f"{m.get('tf_keras')}. Commit `{m.get('git_commit')}`, {results.get('started_utc')} → "
        f"{results.get('finished_utc')} ({results.get('total_seconds', 0) / 60:.1f} min). Load average at start "
        f"{m.get('load_average')}, at the end {results.get('load_average_end')} (2 cores: above 2 means others "
        "were computing too).",
        "",
    ]
    if results.get("merged"):
        prev = results.get("merged_from_run") or {}
        when = (f" of {prev['started_utc']} → {prev['finished_utc']} ({(prev.get('total_seconds') or 0) / 60:.1f} min)"
                if prev.get("started_utc") else "")
        ran = [n for n in b if n not in results["merged"]]
        out += [f"This report merges two runs (`--merge`): {', '.join(ran)} re-ran at the time above; "
                f"{', '.join(results['merged'])} come from the full run{when}.", ""]
    out += ["## Summary", ""]
    heads = headline(results)
    judged = [h for h in heads if h[3] is not None]
    if judged:
        missed = [h[0] for h in judged if not h[3]]
        out += [f"**{len(judged) - len(missed)} of {len(judged)} targets met** in this run; the last column says "
                "which. Sections below give the spread, the baseline and what each figure measures.", ""]
    rows = [[q, f, t, "—" if met is None else ("yes" if met else "**no**")] for q, f, t, met in heads]
    out.append(md_table(["question", "measured (median, spread)", "target", "met"], rows) if rows else "(no figures)")
    def load_at_start(e: dict) -> str:
        d = e.get("data") if isinstance(e.get("data"), dict) else {}
        la = dig(d, "machine", "load_average") or d.get("load_average") or d.get("load_average_after")
        if isinstance(d.get("load_average_1m"), (int, float)):
            la = [d["load_average_1m"]]
        return f"{la[0]:.1f}" if isinstance(la, list) and la else "—"

    status_rows = [[f"`{n}`", e.get("status"), fmt(e.get("seconds"), 0) + " s" if e.get("seconds") else "—",
                    load_at_start(e), f"`{e['command']}`" if e.get("command") else "", e.get("detail", "")]
                   for n, e in b.items()]
    out += ["", "Benchmarks run (load: the 1-minute load average the module recorded; this machine has 2 cores):", "",
            md_table(["benchmark", "status", "time", "load", "command", "detail"], status_rows), ""]

    known = {bm.name: bm for bm in discover()}
    for i, (name, entry) in enumerate(b.items(), 1):
        out += [f"## {i}. {known[name].title if name in known else name}", ""]
        if entry.get("status") != "ok":
            out += [f"Not measured: {entry.get('status')} — {entry.get('detail', '')}", ""]
            continue
        out += section(known.get(name), entry, fig)
    advice = results.get("defaults_advice")
    if advice:
        out += ["## What the numbers say about the defaults", ""] + [f"- {a}" for a in advice] + [""]
    out += ["## Method", "",
            "- Each benchmark module runs in a fresh interpreter (`python -m bench.<module>`), writes its JSON, and "
            "`run_all` collects them into `bench/results.json` (raw samples included).",
            "- Repetitions: at least 5 for every timing (`n=` beside each spread; the pipeline figures use 9 short "
            "epochs, other teams' modules state theirs); one full training run per recipe "
            "for the accuracy table (minutes each on this machine); one run for the memory figures.",
            "- Spread is min–max of the repetitions; ratios are per-repetition pairs (baseline and candidate run back "
            "to back), so a burst of load from other processes lands on both sides of the ratio.",
            "- Synthetic images stand in for CIFAR-10 and the dogs folder in the speed benchmarks (not on this "
            "machine; throughput does not depend on pixel values). Accuracy uses real data only.",
            "- `make test` does not run benchmarks; `tests/test_bench*.py` runs each one's `--quick` mode.",
            ""]
    return "\n".join(out)



# ================================================================================================== main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark's smoke mode; outputs under bench/out/quick/")
    parser.add_argument("--only", nargs="*", default=None, help="run only these benchmarks")
    parser.add_argument("--skip", nargs="*", default=[], help="do not run these benchmarks")
    parser.add_argument("--report", type=Path, default=None, help="default: BENCHMARKS.md (quick: bench/out/quick/)")
    parser.add_argument("--results", type=Path, default=None, help="default: bench/results.json")
    parser.add_argument("--figures", type=Path, default=None, help="default: bench/figures/")
    parser.add_argument("--report-only", action="store_true", help="re-render from the results JSON; run nothing")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other benchmarks' entries of the existing results JSON (with --only)")
    args = parser.parse_args(argv)

    base = OUT_DIR / "quick" if args.quick else None
    report = args.report or (base / "BENCHMARKS.md" if base else ROOT / "BENCHMARKS.md")
    results_path = args.results or (base / "results.json" if base else ROOT / "bench" / "results.json")
    fig_dir = args.figures or (base / "figures" if base else ROOT / "bench" / "figures")
    out_dir = (base or OUT_DIR) / "raw"

    if args.report_only:
        results = json.loads(results_path.read_text())
    else:
        known = {b.name: b for b in discover()}
        unknown = [n for n in (args.only or []) + args.skip if n not in known]
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; expected some of {sorted(known)}")
        chosen = [b for b in known.values() if (args.only is None or b.name in args.only) and b.name not in args.skip]
        started = time.time()
        results = {"quick": args.quick, "machine": machine_info(),
                   "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), "benchmarks": {}}
        for b in chosen:
            results["benchmarks"][b.name] = run_benchmark(b, args.quick, out_dir, out_dir / "logs")
            print(f"bench: {b.name}: {results['benchmarks'][b.name]['status']} "
                  f"({results['benchmarks'][b.name].get('seconds', 0)} s)", file=sys.stderr, flush=True)
        if args.merge and results_path.is_file():
            # Each benchmark's ratios are internal to its own run, so entries from an earlier run stay valid.
            earlier = json.loads(results_path.read_text())
            previous = earlier.get("benchmarks", {})
            results["benchmarks"] = {**previous, **results["benchmarks"]}
            results["merged"] = sorted(set(previous) - {b.name for b in chosen})
            results["merged_from_run"] = earlier.get("merged_from_run") or {
                k: earlier.get(k) for k in ("started_utc", "finished_utc", "total_seconds")}
        results["finished_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results["total_seconds"] = round(time.time() - started, 1)
        results["load_average_end"] = machine_info()["load_average"]
    results["defaults_advice"] = defaults_advice(results)
    results["figures"] = make_figures(results, fig_dir)
    write_json(results_path, results)
    rel = Path(fig_dir).resolve()
    try:
        figures_rel = str(rel.relative_to(Path(report).resolve().parent))
    except ValueError:
        figures_rel = str(rel)
    text = render_report(results, figures_rel)
    report.parent.mkdir(parents=True, exist_ok=True)
    tmp = report.with_name(f".{report.name}.tmp")
    tmp.write_text(text)
    tmp.replace(report)
    print(f"bench: wrote {report}, {results_path}, {len(results['figures'])} figures in {fig_dir}", file=sys.stderr)
    failed = [n for n, e in results["benchmarks"].items() if e.get("status") not in ("ok", "missing")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
