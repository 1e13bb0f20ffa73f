"""Local sweep throughput: the same digits trials run by the sweep with parallelism N, and one after another,
measured in one invocation; the speedup is their wall-time ratio. CPU utilisation is the trials' CPU time
(RUSAGE_CHILDREN) over wall time x cores, beside the whole machine's from /proc/stat (other processes included).

    .venv/bin/python -m bench.bench_sweep [--trials 4] [--parallelism 2] [--epochs 3] [--quick]

Sequential trials get all the cores' threads, parallel ones cores / N each (what `jobctl sweep` does), so the
ratio compares the two ways a user would actually run them. Prints JSON and writes bench/out/sweep.json
(--quick: bench/out/sweep-quick.json). The load average is recorded: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
    from jobs.sweep_local import LocalBackend
    from jobs.sweep_run import run_sweep
    from jobs.sweep_spec import load_sweep

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
    parser.add_argument("--quick", action="store_true", help="smoke mode: 2 tiny MLP trials, 1 epoch")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.examples = 2, 1, 300
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        tmp = Path(tmp)
        common = dict(tmp=tmp, trials=args.trials, epochs=args.epochs, examples=args.examples, mlp=args.quick)
        parallel = measure(_sweep_data("par", parallelism=args.parallelism, **common), args.parallelism,
                           max(1, cores // args.parallelism))
        sequential = measure(_sweep_data("seq", parallelism=1, **common), 1, cores)
    result = {
        "benchmark": "local sweep: parallel vs sequential trials",
        "command": "python -m bench.bench_sweep" + (" --quick" if args.quick else
                                                    f" --trials {args.trials} --parallelism {args.parallelism} --epochs {args.epochs}"),
        "cores": cores,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "parallel": parallel,
        "sequential": sequential,
        "speedup": round(sequential["wall_seconds"] / parallel["wall_seconds"], 3),
    }
    out = args.out or ROOT / "bench" / "out" / ("sweep-quick.json" if args.quick else "sweep.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
