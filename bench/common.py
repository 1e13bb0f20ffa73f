"""Shared helpers for the benchmarks: repetition, median and spread, paired ratios, child-process time and peak
memory, machine info, atomic JSON.

Benchmarks here run on shared machines, so every figure is reported as a ratio to a baseline measured in the same
run, repetition by repetition (interleaved), with the median and the spread (min..max) of the repetitions.
This module imports nothing heavy: the CLI benchmark uses it in processes that must stay free of TensorFlow.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "bench" / "out"


@dataclass
class Stat:
    """Median and spread of repeated measurements (seconds, ratios, img/s: whatever `samples` hold)."""

    median: float
    min: float
    max: float
    n: int
    samples: list[float]

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Stat":
        values = [float(v) for v in samples]
        if not values:
            raise ValueError("Stat.of: expected at least one sample, received none")
        return cls(statistics.median(values), min(values), max(values), len(values), values)

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        d = asdict(self)
        for k in ("median", "min", "max"):
            d[k] = round(d[k], digits)
        d["samples"] = [round(v, digits) for v in self.samples]
        return d


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> Stat:
    """Per-repetition ratios of two interleaved series; pairing cancels most of the load drift between reps."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(
            f"paired_ratio: expected two non-empty series of equal length, received {len(numerators)} and "
            f"{len(denominators)}"
        )
    return Stat.of([a / b for a, b in zip(numerators, denominators)])


def time_call(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(variants: dict[str, Callable[[], Any]], repetitions: int, warmup: int = 1,
                measure: Callable[[Callable[[], Any]], float] = time_call) -> dict[str, list[float]]:
    """Run each variant `warmup` times untimed, then `repetitions` rounds of each variant in turn (A B A B ...).

    `measure(fn)` gives one repetition's figure: by default fn's wall time; a variant that times itself (a
    steady-state epoch inside a longer call) passes `lambda fn: fn()`.
    Interleaving matters on a shared machine: a burst of someone else's load hits both sides of a ratio.
    """
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repetitions):
        for name, fn in variants.items():
            times[name].append(measure(fn))
    return times


@dataclass
class ProcessRun:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


GNU_TIME = Path("/usr/bin/time")


def run_process(cmd: Sequence[str], *, cwd: Optional[Path] = None, env: Optional[dict] = None,
                timeout: float = 600.0) -> ProcessRun:
    """Wall time and peak resident memory of one child process.

    The peak comes from GNU time when present: a child forked straight from this (large) Python process starts
    with this process' high-water mark in its own `ru_maxrss`, which would hide any figure below it. Without GNU
    time, `wait4` is used and the figure is a floor of this process' RSS (`peak_rss_source` says which).
    """
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    rss_file = None
    argv = list(cmd)
    if GNU_TIME.exists():
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [str(GNU_TIME), "-q", "-f", "%M", "-o", rss_file, *argv]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    seconds = time.perf_counter() - started
    peak_kb = 0.0
    if rss_file:
        text = Path(rss_file).read_text().strip().splitlines()
        Path(rss_file).unlink(missing_ok=True)
        peak_kb = float(text[-1]) if text and text[-1].strip().isdigit() else float("nan")
    else:
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # a floor: the largest child so far
    out.seek(0)
    err.seek(0)
    return ProcessRun(seconds, peak_kb / 1024, proc.returncode,
                      out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def bench_env(**extra: str) -> dict[str, str]:
    """The environment benchmark children run with: quiet TensorFlow, no downloads, this checkout importable."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONHASHSEED", "0")
    env["JOBCTL_OFFLINE"] = "1"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPU, cores, memory, load, library versions, commit."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "tf_keras": _version("tf-keras") or _version("tf_keras"),
        "load_average": [round(v, 2) for v in load],
        "git_commit": _git_commit(),
        "gpu": False if not os.environ.get("CUDA_VISIBLE_DEVICES") else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_json(path: Path, payload: Any) -> Path:
    """Atomic (jobs.fsutil): a reader (run_all, a test) never sees half a file."""
    from jobs.fsutil import atomic_write_text

    return atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def write_and_show(path: Path, result: dict) -> dict:
    """Write a benchmark's result as JSON and print it, without the bulky machine description."""
    write_json(path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=_json_default))
    return result


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Stat):
        return obj.as_dict()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def add_common_args(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one repetition (for tests)")
    parser.add_argument("--repetitions", type=int, default=None, help="repetitions per figure (default 5; quick 1)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON (default bench/out/<name>.json)")


def repetitions(args, default: int = 5) -> int:
    """--repetitions when given (at least 1), else 1 in quick mode, else `default`."""
    if args.repetitions is not None:
        if args.repetitions < 1:
            raise SystemExit(f"--repetitions: expected at least 1, received {args.repetitions}")
        return args.repetitions
    return 1 if args.quick else default


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so no two are the same)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
