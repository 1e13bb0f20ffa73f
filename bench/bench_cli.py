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
from bench.report import FigureLink, Headline, dig, fmt, fmt_stat, md_table

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
        from bench.k8s_emulator import FakeCluster, make_pod  # the KMock API server the tests use too

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
    cmd = [*jobctl_command(), "serve", str(base), "--port", str(port), "--host", "127.0.0.1", "--grace-seconds", "1",
           "--rest-api-port", "0"]  # gRPC alone, as measured before REST existed
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


# ================================================================================ report (bench.run_all)
def headlines(data: dict) -> list[Headline]:
    """Start-up of the light commands against their targets and against `import tensorflow`."""
    rows: list[Headline] = []
    cli = dig(data, "startup", "commands")
    if cli:
        for name in ("help", "render", "status"):
            c = cli.get(name)
            if c:
                rows.append(Headline(f"`{c['command']}` start-up", fmt_stat(c["seconds"], unit=" s") +
                             f"; {c['speedup_vs_import_tensorflow']['median']:.1f}x faster than `import tensorflow`",
                             f"≤ {c['target_seconds']} s" if "target_seconds" in c else "no TensorFlow",
                             c.get("meets_target", None)))
    return rows


def report_section(data: dict, fig: FigureLink) -> str:
    s = data.get("startup", {})
    cmds = s.get("commands", {})
    out = ["Each command in a fresh process, as users run it (the installed `jobctl` script); `status` talks to a "
           "Kubernetes API on localhost (KMock). Peak memory is the process' own maximum resident set. Speed-up = "
           "`import tensorflow` seconds / command seconds, paired per repetition.", ""]
    rows = []
    for name, c in cmds.items():
        rows.append([f"`{c['command']}`", fmt_stat(c["seconds"], 3, " s"), fmt_stat(c["peak_rss_mb"], 0, " MB"),
                     fmt_stat(c.get("speedup_vs_import_tensorflow"), 1, "x") if c.get("speedup_vs_import_tensorflow") else "baseline",
                     f"≤ {c['target_seconds']} s: {fmt(c['meets_target'])}" if "target_seconds" in c else ""])
    out.append(md_table(["command", "wall time", "peak memory", "vs import tensorflow", "target"], rows))
    for note in s.get("notes", []):
        out.append(f"\nNote: {note}")
    mem = data.get("memory") or {}
    if "training" in mem:
        t, sv = mem["training"], mem.get("serving", {})
        out += ["", "Peak memory of the heavy processes (one run each):", "",
                md_table(["process", "peak memory", "detail"], [
                    [f"training (`python -m jobs.train`, `{t['recipe']}`, {t['epochs']} epochs)",
                     f"{t['peak_rss_mb']:,.0f} MB", f"{t['seconds']:.1f} s including start-up and export"],
                    ["serving (`jobctl serve` of that export)", f"{sv.get('peak_rss_mb', 0):,.0f} MB",
                     f"ready in {sv.get('ready_seconds')} s; {sv.get('requests')} sequential Predict calls of "
                     f"{sv.get('batch')} images: {sv.get('images_per_second_sequential', 0):,.0f} img/s"],
                ])]
    elif mem.get("error"):
        out += ["", f"Memory runs failed: {mem['error']}"]
    out += ["", fig("cli.png")]
    return "\n".join(out)



def figures(data: dict, canvas) -> None:
    cmds = dig(data, "startup", "commands")
    if cmds:
        fig, ax = canvas.plt.subplots(figsize=(8, 4))
        names = list(cmds)
        stats = [cmds[k]["seconds"] for k in names]
        med = [s["median"] for s in stats]
        err = [[s["median"] - s["min"] for s in stats], [s["max"] - s["median"] for s in stats]]
        ax.barh(range(len(names)), med, xerr=err, capsize=4,
                color=["tab:gray" if k in ("python", "import_tensorflow") else "tab:blue" for k in names])
        ax.set_yticks(range(len(names)), [cmds[k]["command"][:40] for k in names], fontsize=8)
        for p, (v, st) in enumerate(zip(med, stats)):
            ax.text(st["max"], p, f"  {v:.2f} s", va="center", fontsize=8)
        for t, ls in ((0.5, "--"), (1.0, ":")):
            ax.axvline(t, color="tab:red", ls=ls, lw=1, label=f"target {t} s")
        ax.set_xscale("log")
        ax.set_xlabel("seconds (log scale)")
        ax.set_title("CLI start-up in a fresh process")
        ax.legend(fontsize=8)
        canvas.save(fig, "cli.png")


if __name__ == "__main__":
    main()
