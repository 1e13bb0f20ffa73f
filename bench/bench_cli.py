"""CLI start-up and peak memory, against `python -c "import tensorflow"`.

    .venv/bin/python -m bench.bench_cli [--quick] [--repetitions 5] [--out bench/out/cli.json] [--no-memory]

Every command runs in a fresh process, as users run it: `jobctl --help` (target at most 0.5 s), `jobctl render`
(at most 1 s), `jobctl status` against a Kubernetes API on localhost (KMock, the test harness' FakeCluster), and the
floors `python -c pass` and `python -c "import tensorflow"`. Wall time and the process' own peak RSS (`wait4`).
Memory of the heavy processes, once each (they take tens of seconds): a 2-epoch digits training run
(`python -m jobs.train`, what the container runs) and `jobctl serve` of its export while it answers Predict calls.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from bench.common import (
    OUT_DIR, ROOT, Stat, add_common_args, bench_env, machine_info, paired_ratio, repetitions, run_process, write_json,
)
from bench.common import free_port as _free_port

TARGETS = {"help": 0.5, "render": 1.0}


def jobctl_command() -> list[str]:
    """The installed console script when there is one (what users run), else the module."""
    script = Path(sys.executable).parent / "jobctl"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli.main"]


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": url}}],
        "users": [{"name": "bench", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench", "namespace": "ml"}}],
        "current-context": "bench",
    }))
    return path


def startup(reps: int, tmp: Path) -> dict[str, Any]:
    env = bench_env()
    jobctl = jobctl_command()
    spec = tmp / "job.yaml"
    spec.write_text(yaml.safe_dump({"name": "cifar-dist", "resources": {"workers": 4, "gpus": 1}}))
    # What the report shows (the real argv has temporary paths).
    shown = {"python": 'python -c pass', "import_tensorflow": 'python -c "import tensorflow"', "help": "jobctl --help",
             "render": "jobctl render job.yaml -o DIR", "status": "jobctl status JOB"}
    commands: dict[str, list[str]] = {
        "python": [sys.executable, "-c", "pass"],
        "import_tensorflow": [sys.executable, "-c", "import tensorflow"],
        "help": [*jobctl, "--help"],
        "render": [*jobctl, "render", str(spec), "-o", str(tmp / "rendered")],
    }
    cluster = None
    notes: list[str] = []
    try:
        from tests.test_k8s_harness import FakeCluster, make_pod  # the in-repo KMock API server

        cluster = FakeCluster(namespace="ml").__enter__()
        kube = ["--kubeconfig", str(_kubeconfig(tmp / "kubeconfig", cluster.url)), "--context", "bench"]
        submitted = run_process([*jobctl, "submit", str(spec), *kube], cwd=ROOT, env=env, timeout=60)
        if submitted.returncode != 0:
            raise RuntimeError(f"jobctl submit exited {submitted.returncode}: {submitted.stderr[-300:]}")
        job = cluster.objects("Job")[0]
        cluster.put("Pod", make_pod(job, 0, suffix="a", phase="Running"))
        cluster.put("Pod", make_pod(job, 1, suffix="b", phase="Failed",
                                    state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
        commands["status"] = [*jobctl, "status", "cifar-dist", *kube]
    except Exception as exc:  # noqa: BLE001 - the other figures still count; the report says why this one is missing
        notes.append(f"status not measured: {exc.__class__.__name__}: {exc}")

    runs: dict[str, list] = {name: [] for name in commands}
    try:
        for name, cmd in commands.items() if reps > 1 else ():  # untimed: file-system caches warm for everyone
            run_process(cmd, cwd=ROOT, env=env, timeout=120)
        for _ in range(reps):
            for name, cmd in commands.items():
                r = run_process(cmd, cwd=ROOT, env=env, timeout=120)
                if r.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd[-3:])} exited {r.returncode}: {r.stderr[-500:]}")
                runs[name].append(r)
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)

    seconds = {name: [r.seconds for r in rs] for name, rs in runs.items()}
    figures: dict[str, Any] = {}
    for name, rs in runs.items():
        figures[name] = {
            "seconds": Stat.of(seconds[name]),
            "peak_rss_mb": Stat.of([r.peak_rss_mb for r in rs]),
            "command": shown[name],
        }
        if name not in ("python", "import_tensorflow"):
            # > 1: the command starts that many times faster than importing TensorFlow alone.
            figures[name]["speedup_vs_import_tensorflow"] = paired_ratio(seconds["import_tensorflow"], seconds[name])
            if name in TARGETS:
                figures[name]["target_seconds"] = TARGETS[name]
                figures[name]["meets_target"] = figures[name]["seconds"].median <= TARGETS[name]
    return {"commands": figures, "repetitions": reps, "notes": notes}


def memory(tmp: Path, quick: bool) -> dict[str, Any]:
    """Peak RSS of one training run and of the server answering Predict calls for its export."""
    env = bench_env()
    epochs = 1 if quick else 2
    train = run_process(
        [sys.executable, "-m", "jobs.train", "--spec", str(ROOT / "examples" / "digits-cnn.yaml"),
         "--artifacts-dir", str(tmp / "artifacts"), "--run-id", "bench",
         "--set", f"training.epochs={epochs}", "--set", "callbacks.tensorboard.enabled=false"],
        cwd=ROOT, env=env, timeout=600,
    )
    if train.returncode != 0:
        raise RuntimeError(f"training exited {train.returncode}: {train.stderr[-800:]}")
    result: dict[str, Any] = {
        "training": {"recipe": "digits-cnn", "epochs": epochs, "seconds": round(train.seconds, 2),
                     "peak_rss_mb": round(train.peak_rss_mb, 1)},
    }
    result["serving"] = _serving_memory(tmp / "artifacts" / "models" / "digits-cnn", env, requests=20 if quick else 200)
    return result


def _serving_memory(base: Path, env: dict, requests: int) -> dict[str, Any]:
    import subprocess

    import numpy as np

    # wait4 rather than GNU time (SIGTERM must reach the server itself). The child starts with this process'
    # high-water mark (~100 MB here), far below a TensorFlow server's, so the figure is the server's own.
    port = _free_port()
    cmd = [*jobctl_command(), "serve", str(base), "--port", str(port), "--host", "127.0.0.1", "--grace-seconds", "1"]
    log = tempfile.TemporaryFile()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    ready_seconds: Optional[float] = None
    try:
        from serving.client import PredictClient

        deadline = time.perf_counter() + 120
        with PredictClient(f"127.0.0.1:{port}", base.name, timeout=5.0, retries=0) as client:
            x = np.random.default_rng(0).integers(0, 17, size=(32, 8, 8, 1)).astype("uint8")
            while True:
                try:
                    client.predict(x[:1])
                    ready_seconds = time.perf_counter() - started
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    if proc.poll() is not None or time.perf_counter() > deadline:
                        raise
                    time.sleep(0.2)
            t0 = time.perf_counter()
            for _ in range(requests):
                client.predict(x)
            predict_seconds = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            usage = None
    if usage is None:
        raise RuntimeError("jobctl serve: could not read the server's resource usage")
    return {
        "model": base.name,
        "ready_seconds": round(ready_seconds or float("nan"), 2),
        "requests": requests,
        "batch": 32,
        "images_per_second_sequential": round(requests * 32 / predict_seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cli", description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--no-memory", action="store_true", help="skip the training and serving memory runs")
    args = parser.parse_args(argv)
    reps = repetitions(args)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "cli", "quick": args.quick, "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="jobctl-bench-cli-") as tmp:
        print(f"cli: start-up, {reps} repetitions", file=sys.stderr, flush=True)
        result["startup"] = startup(reps, Path(tmp))
        if not args.no_memory:
            print("cli: peak memory of training and serving", file=sys.stderr, flush=True)
            try:
                result["memory"] = memory(Path(tmp), args.quick)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal: start-up figures stand alone
                result["memory"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out or OUT_DIR / "cli.json", result)
    return result


if __name__ == "__main__":
    main()
