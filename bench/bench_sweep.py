"""Local sweep throughput: the same digits trials run by the sweep with parallelism N, and one after another,
measured in one invocation; the speedup is their wall-time ratio. CPU utilisation is the trials' CPU time
(RUSAGE_CHILDREN) over wall time x cores, beside the whole machine's from /proc/stat (other processes included).

    .venv/bin/python -m bench.bench_sweep [--trials 4] [--parallelism 2] [--epochs 3] [--repetitions 3] [--quick]

Sequential trials get all the cores' threads, parallel ones cores / N each (what `jobctl sweep` does), so the
ratio compares the two ways a user would actually run them. Repetitions alternate which mode goes first and the
speedup is the median of the paired (same repetition) ratios, with its spread. Prints JSON and writes
bench/out/sweep.json (--quick: one repetition of 2 tiny trials, bench/out/sweep-quick.json).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Stat, add_common_args, machine_info, paired_ratio, repetitions, write_and_show


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=1000, help="data.max_train_examples")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.examples = 2, 1, 300
    reps = repetitions(args, default=3)
    cores = os.cpu_count() or 1
    runs: dict[str, list[dict]] = {"parallel": [], "sequential": []}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        common = dict(trials=args.trials, epochs=args.epochs, examples=args.examples, mlp=args.quick)
        for rep in range(reps):
            # Alternate which goes first: a burst of someone else's load hits both sides of the ratio.
            order = ("parallel", "sequential") if rep % 2 == 0 else ("sequential", "parallel")
            for mode in order:
                par = args.parallelism if mode == "parallel" else 1
                data = _sweep_data(f"{mode[:3]}{rep}", tmp=tmp / f"{mode}{rep}", parallelism=par, **common)
                runs[mode].append(measure(data, par, max(1, cores // par)))
    speedup = paired_ratio([r["wall_seconds"] for r in runs["sequential"]], [r["wall_seconds"] for r in runs["parallel"]])

    def summary(mode: str) -> dict:
        rs = runs[mode]
        first = rs[0]
        out = {k: first[k] for k in ("parallelism", "threads_per_trial", "trials")}
        out["succeeded"] = min(r["succeeded"] for r in rs)
        for key in ("wall_seconds", "seconds_per_trial", "trial_cpu_seconds", "trial_cpu_utilisation",
                    "machine_cpu_utilisation"):
            out[key] = round(Stat.of([r[key] for r in rs]).median, 3)
        out["runs"] = rs
        return out

    result = {
        "benchmark": "local sweep: parallel vs sequential trials",
        "command": "python -m bench.bench_sweep" + (" --quick" if args.quick else
                                                    f" --trials {args.trials} --parallelism {args.parallelism} "
                                                    f"--epochs {args.epochs} --repetitions {reps}"),
        "machine": machine_info(),
        "cores": cores,
        "repetitions": reps,
        "parallel": summary("parallel"),
        "sequential": summary("sequential"),
        "speedup": round(speedup.median, 3),  # sequential wall / parallel wall, median of the paired repetitions
        "speedup_spread": speedup.as_dict(3),
    }
    out = args.out or ROOT / "bench" / "out" / ("sweep-quick.json" if args.quick else "sweep.json")
    return write_and_show(out, result)


if __name__ == "__main__":
    main()
