"""Local sweeps, three measurements in one invocation, on the digits recipe (examples/digits-cnn.yaml) with fixed
seeds:

1. Budget: the epochs TPE with ASHA pruning trains (all trials, pruned ones included, one at a time) until a trial
   reaches the full grid's best validation accuracy within one validation image, against the epochs the grid
   spends. Target: at most 50%. The grid runs once (the recipe's seed fixes its result); TPE runs once per
   repetition with sampler seed = the repetition, asking up to 3x the grid's trials, and stops once one reached it.
2. Warm start: a Hyperband sweep (pruner hyperband, the same random trials) with promoted trials continuing from
   their rung's backup, against the same sweep retraining them from scratch (warm_start false, keras-tuner's way):
   wall time and best validation accuracy side by side, alternating which goes first.
3. Throughput: the same digits trials run by the sweep with parallelism N, and one after another; the speedup
   is their wall-time ratio. CPU utilisation is the trials' CPU time (RUSAGE_CHILDREN) over wall time x cores,
   beside the whole machine's from /proc/stat (other processes included).

    .venv/bin/python -m bench.bench_sweep [--trials 4] [--parallelism 2] [--epochs 3] [--repetitions 3] [--quick]

Throughput: sequential trials get all the cores' threads, parallel ones cores / N each (what `jobctl sweep` does), so the
ratio compares the two ways a user would actually run them. Repetitions alternate which mode goes first and the
speedup is the median of the paired (same repetition) ratios, with its spread. Prints JSON and writes
bench/out/sweep.json (--quick: one repetition of 2 tiny trials, bench/out/sweep-quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.common import (
    ROOT,
    Stat,
    add_common_args,
    machine_info,
    paired_ratio,
    repetitions,
    write_and_show,
)
from jobs import contract


def _proc_stat() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _sweep_data(name: str, tmp: Path, trials: int, epochs: int, examples: int, parallelism: int, mlp: bool) -> dict:
    model = {"type": "mlp", "dense_units": [32]} if mlp else {"type": "cnn", "conv_filters": [16, 32], "padding": "same", "dense_units": [32]}
    base = {
        "name": "bench",
        "data": {"dataset": "digits", "max_train_examples": examples},
        "model": model,
        "training": {"epochs": epochs, "batch_size": 32},
        "callbacks": {"tensorboard": {"enabled": False}},
        "export": {"warmup_requests": 1},
    }
    rates = [round(0.02 / (2 ** i), 6) for i in range(trials)]
    return {
        "name": name, "base": base, "parameters": {"training.learning_rate": rates},
        "parallelism": parallelism, "artifacts_dir": str(tmp / "artifacts"), "sweep_dir": str(tmp / "sweeps" / name),
    }


def measure(data: dict, parallelism: int, threads: int) -> dict:
    from sweeps.backends.local import LocalBackend
    from sweeps.scheduler import run_sweep
    from sweeps.spec import load_sweep

    sweep = load_sweep(data)
    backend = LocalBackend(sweep, parallelism=parallelism, threads_per_trial=threads)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, total0 = _proc_stat()
    t0 = time.perf_counter()
    out = run_sweep(sweep, backend, parallelism=parallelism, poll_seconds=0.1)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = _proc_stat()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    cores = os.cpu_count() or 1
    return {
        "parallelism": parallelism,
        "threads_per_trial": threads,
        "trials": len(sweep.trials),
        "succeeded": out.counts["succeeded"],
        "wall_seconds": round(wall, 2),
        "seconds_per_trial": round(wall / max(1, len(sweep.trials)), 2),
        "trial_cpu_seconds": round(cpu, 2),
        "trial_cpu_utilisation": round(cpu / (wall * cores), 3),
        "machine_cpu_utilisation": round((busy1 - busy0) / max(1e-9, total1 - total0), 3),
        "best_val_accuracy": out.best["value"] if out.best else None,
    }


# ======================================================================== budget: TPE + ASHA against the grid
RECIPE = ROOT / "examples" / "digits-cnn.yaml"


def _recipe_sweep(name: str, tmp: Path, parameters: dict, epochs: int, examples: int, **kw) -> dict:
    """A sweep over the digits recipe, trimmed for a benchmark: no TensorBoard, no early stopping (the pruner is
    what stops trials here), one warmup record; the recipe's seed (42) kept, so a configuration trains the same
    way every time."""
    fixed = {"training.epochs": epochs, "callbacks.early_stopping.enabled": False,
             "callbacks.tensorboard.enabled": False, "export.warmup_requests": 1}
    if examples:
        fixed["data.max_train_examples"] = examples
    return {"name": name, "base": str(RECIPE), "fixed": fixed, "parameters": parameters,
            "artifacts_dir": str(tmp / "artifacts"), "sweep_dir": str(tmp / "sweeps" / name), **kw}


def _trial_curves(sweep_dir: Path) -> list[dict]:
    """Each trial in the order it started: its per-epoch validation accuracy (from its own history.json), status,
    and the validation set's size."""
    state = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    runs = sorted(state["runs"].values(), key=lambda r: (r.get("started") or "", r["trial"]))
    out = []
    for r in runs:
        run_dir = Path(r.get("run_dir") or "")
        try:
            history = json.loads((run_dir / "history.json").read_text())
        except (OSError, ValueError):
            history = {}
        try:
            num_val = json.loads((run_dir / contract.METRICS_FILE).read_text()).get("num_val")
        except (OSError, ValueError):
            num_val = None
        out.append({"trial": r["trial"], "status": r["status"], "val_accuracy": history.get("val_accuracy") or [],
                    "num_val": num_val, "params": state["trials"][r["trial"]]["params"]})
    return out


def epochs_to_reach(curves: list[dict], target: float) -> Optional[int]:
    """Epochs trained, trial after trial, until one reaches `target` (None: none did)."""
    spent = 0
    for c in curves:
        for i, v in enumerate(c["val_accuracy"]):
            spent += 1
            if v >= target - 1e-9:
                return spent
    return None


def _tpe_runs(tmp: Path, name: str, searched: dict, reps: int, epochs: int, examples: int, max_trials: int,
              n_startup: int, asha_min_epochs: int, target: float, grid_epochs: int) -> dict:
    """TPE + ASHA, one sweep per sampler seed, one trial at a time: the epochs until a trial reached `target`. A
    search is not bound to the grid's trial count: it may ask `max_trials`, and stops once a trial reached it."""
    from sweeps.backends.local import LocalBackend
    from sweeps.scheduler import SweepInterrupted, run_sweep
    from sweeps.spec import load_sweep

    runs = []
    for rep in range(reps):
        tpe = load_sweep(_recipe_sweep(
            f"{name}{rep}", tmp / f"{name}{rep}", searched, epochs, examples, max_trials=max_trials,
            algorithm={"type": "tpe", "seed": rep, "n_startup_trials": n_startup},
            pruner={"type": "asha", "min_epochs": asha_min_epochs, "reduction_factor": 3}))

        def stop_once_reached(progress, sweep_dir=tpe.sweep_dir):
            if progress.kind in ("finished", "pruned") and epochs_to_reach(_trial_curves(sweep_dir), target):
                raise KeyboardInterrupt

        t0 = time.perf_counter()
        try:
            out = run_sweep(tpe, LocalBackend(tpe, parallelism=1), parallelism=1, poll_seconds=0.1,
                            on_progress=stop_once_reached)
        except SweepInterrupted as stopped:
            out = stopped.outcome
        wall = time.perf_counter() - t0
        tcurves = _trial_curves(tpe.sweep_dir)
        reached = epochs_to_reach(tcurves, target)
        runs.append({
            "seed": rep, "wall_seconds": round(wall, 2), "epochs_to_reach_grid_best": reached,
            "epochs_total": sum(len(c["val_accuracy"]) for c in tcurves), "trials": len(tcurves),
            "fraction_of_grid_epochs": round(reached / grid_epochs, 3) if reached else None,
            "best_val_accuracy": max((max(c["val_accuracy"]) for c in tcurves if c["val_accuracy"]), default=None),
            "pruned": out.counts["pruned"], "succeeded": out.counts["succeeded"],
        })
    fractions = [r["fraction_of_grid_epochs"] for r in runs if r["fraction_of_grid_epochs"] is not None]
    return {"searched": searched, "runs": runs, "reached": f"{len(fractions)}/{len(runs)}",
            "median_fraction_of_grid_epochs": round(Stat.of(fractions).median, 3) if fractions else None}


def measure_budget(tmp: Path, reps: int, quick: bool, asha_min_epochs: int = 1,
                   spaces: tuple[str, ...] = ("box", "grid")) -> dict:
    """The grid once, then TPE + ASHA per space: "box", the ranges that hold the grid's values (log-uniform rate,
    uniform dropout), the way a Bayesian search is meant to be used; "grid", the grid's own points."""
    from sweeps.backends.local import LocalBackend
    from sweeps.scheduler import run_sweep
    from sweeps.spec import load_sweep

    lrs = [0.01, 0.001] if quick else [0.03, 0.01, 0.003, 0.001]
    dropouts = [0.2] if quick else [0.0, 0.3]
    epochs, examples = (3, 300) if quick else (9, 0)
    space = {"training.learning_rate": lrs, "model.dropout": dropouts}
    grid = load_sweep(_recipe_sweep("grid", tmp / "grid", space, epochs, examples, algorithm={"type": "grid"}))
    t0 = time.perf_counter()
    run_sweep(grid, LocalBackend(grid, parallelism=2), parallelism=2, poll_seconds=0.1)
    grid_wall = time.perf_counter() - t0
    curves = _trial_curves(grid.sweep_dir)
    grid_epochs = sum(len(c["val_accuracy"]) for c in curves)
    best = max(max(c["val_accuracy"]) for c in curves if c["val_accuracy"])
    num_val = next(c["num_val"] for c in curves if c["num_val"])
    target = best - 1.0 / num_val  # within one validation image
    searched = {"grid": space,
                "box": {"training.learning_rate": {"min": min(lrs), "max": max(lrs), "scale": "log"},
                        "model.dropout": {"min": min(dropouts), "max": max(dropouts)} if len(dropouts) > 1 else dropouts}}
    tpe = {name: _tpe_runs(tmp, f"tpe-{name}", searched[name], reps, epochs, examples, 3 * len(curves),
                           max(2, len(curves) // 3), asha_min_epochs, target, grid_epochs) for name in spaces}
    return {
        "space": {k: v for k, v in space.items()}, "epochs_per_trial": epochs, "max_train_examples": examples or "all",
        "grid": {"trials": len(curves), "epochs": grid_epochs, "best_val_accuracy": best, "num_val": num_val,
                 "wall_seconds": round(grid_wall, 2)},
        "target_val_accuracy": round(target, 6), "max_trials": 3 * len(curves),
        "tpe_asha": tpe, "target_fraction": 0.5, "asha_min_epochs": asha_min_epochs,
    }


# ============================================================================ warm-started vs cold Hyperband
def measure_warm_start(tmp: Path, reps: int, quick: bool) -> dict:
    from sweeps.backends.local import LocalBackend
    from sweeps.scheduler import run_sweep
    from sweeps.spec import load_sweep

    epochs, examples, trials = (3, 300, 3) if quick else (9, 0, 6)
    space = {"training.learning_rate": {"min": 1e-3, "max": 3e-2, "scale": "log"}, "model.dropout": [0.0, 0.3]}
    runs: dict[str, list[dict]] = {"warm": [], "cold": []}
    for rep in range(reps):
        for mode in (("warm", "cold") if rep % 2 == 0 else ("cold", "warm")):
            s = load_sweep(_recipe_sweep(
                f"hb-{mode}{rep}", tmp / f"hb-{mode}{rep}", space, epochs, examples, max_trials=trials,
                algorithm={"type": "random", "seed": rep},
                pruner={"type": "hyperband", "min_epochs": 1, "reduction_factor": 3, "warm_start": mode == "warm"}))
            t0 = time.perf_counter()
            out = run_sweep(s, LocalBackend(s, parallelism=2), parallelism=2, poll_seconds=0.1)
            wall = time.perf_counter() - t0
            curves = _trial_curves(s.sweep_dir)
            state = json.loads((s.sweep_dir / "sweep.json").read_text())
            runs[mode].append({
                "seed": rep, "wall_seconds": round(wall, 2),
                "best_val_accuracy": out.best["value"] if out.best else None,
                "epochs_trained": sum(len(c["val_accuracy"]) for c in curves),
                "promotions": sum(len(r.get("rungs") or []) for r in state["runs"].values()),
                "pruned": out.counts["pruned"], "succeeded": out.counts["succeeded"],
            })
    ratio = paired_ratio([r["wall_seconds"] for r in runs["cold"]], [r["wall_seconds"] for r in runs["warm"]])
    return {
        "trials": trials, "max_epochs": epochs, "runs": runs,
        "cold_over_warm_wall": round(ratio.median, 3), "cold_over_warm_spread": ratio.as_dict(3),
        "equal_final_accuracy": all(w["best_val_accuracy"] == c["best_val_accuracy"]
                                    for w, c in zip(runs["warm"], runs["cold"])),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=1000, help="data.max_train_examples")
    parser.add_argument("--asha-min-epochs", type=int, default=1,
                        help="budget: ASHA's first rung (1: the most aggressive; 3: a third of the 9 epochs)")
    parser.add_argument("--tpe-space", nargs="+", choices=["box", "grid"], default=["box", "grid"],
                        help="budget: TPE searches the ranges that hold the grid's values (box), its points (grid)")
    parser.add_argument("--parts", default="budget,warm,throughput",
                        help="comma-separated: budget (TPE+ASHA vs grid), warm (Hyperband warm vs cold), throughput")
    add_common_args(parser)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if args.quick:
        args.trials, args.epochs, args.examples = 2, 1, 300
    reps = repetitions(args, default=3)
    cores = os.cpu_count() or 1
    runs: dict[str, list[dict]] = {"parallel": [], "sequential": []}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        common = dict(trials=args.trials, epochs=args.epochs, examples=args.examples, mlp=args.quick)
        for rep in range(reps if "throughput" in parts else 0):
            # Alternate which goes first: a burst of someone else's load hits both sides of the ratio.
            order = ("parallel", "sequential") if rep % 2 == 0 else ("sequential", "parallel")
            for mode in order:
                par = args.parallelism if mode == "parallel" else 1
                data = _sweep_data(f"{mode[:3]}{rep}", tmp=tmp / f"{mode}{rep}", parallelism=par, **common)
                runs[mode].append(measure(data, par, max(1, cores // par)))
        budget = (measure_budget(tmp / "budget", reps, args.quick, args.asha_min_epochs, tuple(args.tpe_space))
                  if "budget" in parts else None)
        warm_start = measure_warm_start(tmp / "warm", reps, args.quick) if "warm" in parts else None
    speedup = paired_ratio([r["wall_seconds"] for r in runs["sequential"]] or [1.0],
                           [r["wall_seconds"] for r in runs["parallel"]] or [1.0])

    def summary(mode: str) -> Optional[dict]:
        rs = runs[mode]
        if not rs:
            return None
        first = rs[0]
        out = {k: first[k] for k in ("parallelism", "threads_per_trial", "trials")}
        out["succeeded"] = min(r["succeeded"] for r in rs)
        for key in ("wall_seconds", "seconds_per_trial", "trial_cpu_seconds", "trial_cpu_utilisation",
                    "machine_cpu_utilisation"):
            out[key] = round(Stat.of([r[key] for r in rs]).median, 3)
        out["runs"] = rs
        return out

    result = {
        "benchmark": "local sweeps: TPE+ASHA budget against the grid, warm vs cold Hyperband, parallel vs sequential",
        "command": "python -m bench.bench_sweep" + (" --quick" if args.quick else
                                                    f" --trials {args.trials} --parallelism {args.parallelism} "
                                                    f"--epochs {args.epochs} --repetitions {reps}")
                   + ("" if parts == {"budget", "warm", "throughput"} else f" --parts {args.parts}"),
        "machine": machine_info(),
        "cores": cores,
        "repetitions": reps,
        "parallel": summary("parallel"),
        "sequential": summary("sequential"),
        **({"speedup": round(speedup.median, 3),  # sequential wall / parallel wall, median of the paired repetitions
            "speedup_spread": speedup.as_dict(3)} if runs["parallel"] else {}),
        "budget": budget,
        "warm_start": warm_start,
    }
    out = args.out or ROOT / "bench" / "out" / ("sweep-quick.json" if args.quick else "sweep.json")
    return write_and_show(out, result)


# ================================================================================ report (bench.run_all)
def _budget_spaces(budget: dict) -> dict:
    """space -> its TPE runs; a run from before spaces were compared holds one, over the grid's points."""
    if not budget:
        return {}
    if isinstance(budget.get("tpe_asha"), dict):
        return budget["tpe_asha"]
    return {"grid": {"runs": budget["tpe_asha"], "reached": budget["reached"],
                     "median_fraction_of_grid_epochs": budget.get("median_fraction_of_grid_epochs")}}


def headlines(data: dict) -> list:
    """The summary rows bench.run_all shows first (bench/report.py's Headline: what, figure, target, met)."""
    from bench.report import Headline, fmt_stat, target_headlines

    rows = []
    budget = data.get("budget") or {}
    labels = {"box": "over the ranges holding the grid's values", "grid": "over the grid's own points"}
    for space, result in _budget_spaces(budget).items():
        frac = result.get("median_fraction_of_grid_epochs")
        n_reached, n_runs = (int(x) for x in result["reached"].split("/"))
        rows.append(Headline("Epochs TPE+ASHA needs to reach the grid's best validation accuracy (within one image), "
                             f"of the grid's {budget['grid']['epochs']}, {labels.get(space, space)}",
                             (f"{frac:.0%} median of the runs that reached it ({result['reached']} did)"
                              if frac is not None else f"none of {n_runs} runs reached it"),
                             "<= 50%", frac is not None and frac <= 0.5 and n_reached == n_runs))
    warm = data.get("warm_start") or {}
    if warm.get("cold_over_warm_wall"):
        rows.append(Headline("Hyperband wall time, cold restarts over warm-started promotions",
                             fmt_stat(warm["cold_over_warm_spread"], unit="x"), "—", None))
    if "speedup" in data:
        par = (data.get("parallel") or {}).get("parallelism")
        fig = (fmt_stat(data["speedup_spread"], unit="x") if isinstance(data.get("speedup_spread"), dict)
               else f"{data['speedup']:.2f}x")
        rows.append(Headline(f"Local sweep speed-up, parallelism {par} vs one trial at a time", fig, "—", None))
    return rows + target_headlines("sweep", data)


def report_section(data: dict, fig=None) -> str:
    """This benchmark's section of the report, as Markdown."""
    from bench.report import fmt, md_table

    out = []
    budget = data.get("budget")
    if budget:
        g = budget["grid"]
        out += [f"**Budget.** Grid over {budget['space']}: {g['trials']} trials x {budget['epochs_per_trial']} epochs "
                f"= {g['epochs']} epochs, best validation accuracy {fmt(g['best_val_accuracy'], 4)} "
                f"({g['num_val']} validation images; target {fmt(budget['target_val_accuracy'], 4)}). TPE + ASHA "
                f"(first rung {budget.get('asha_min_epochs', 1)} epoch(s), reduction factor 3), one trial at a time, "
                f"up to {budget.get('max_trials', g['trials'])} trials, stopping once one reaches the target:", ""]
        for space, result in _budget_spaces(budget).items():
            out += [f"*{space}*: `{result.get('searched') or budget['space']}`", "",
                    md_table(["sampler seed", "epochs to the grid's best", "of the grid's", "trials", "epochs in all",
                              "pruned", "best val accuracy", "wall s"],
                             [[r["seed"], r["epochs_to_reach_grid_best"], fmt(r["fraction_of_grid_epochs"], 3),
                               r.get("trials", "—"), r["epochs_total"], r["pruned"], fmt(r["best_val_accuracy"], 4),
                               r["wall_seconds"]] for r in result["runs"]]), ""]
    warm = data.get("warm_start")
    if warm:
        rows = [[mode, r["seed"], r["wall_seconds"], r["epochs_trained"], r["promotions"], r["pruned"],
                 fmt(r["best_val_accuracy"], 4)] for mode in ("warm", "cold") for r in warm["runs"][mode]]
        out += [f"**Warm start.** Hyperband (min 1, max {warm['max_epochs']} epochs, reduction factor 3) over "
                f"{warm['trials']} random trials, promoted trials resuming from their rung's backup (warm) or "
                f"retraining from scratch (cold): cold/warm wall time {fmt(warm['cold_over_warm_wall'], 2)}x; equal "
                f"final accuracy: {warm['equal_final_accuracy']}.", "",
                md_table(["mode", "seed", "wall s", "epochs trained", "promotions", "pruned", "best val accuracy"], rows),
                ""]
    if data.get("parallel"):
        out += [f"**Throughput.** Parallelism {data['parallel']['parallelism']} vs one trial at a time: speed-up "
                f"{fmt(data.get('speedup'), 2)}x.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
