"""`jobctl render` wall time in a fresh process (target: at most 1 s), and the pure builder's time in-process;
the Indexed Job and the JobSet backend (distribution.backend: jobset) of the same spec, run alternately.

    .venv/bin/python -m bench.bench_render [--runs 7] [--quick] [--out bench/out/render.json]
Prints JSON and writes it to --out (--quick: one run). The load average is recorded: on a shared 2-core machine,
other processes' tests can multiply the wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import OUT_DIR, ROOT, machine_info, write_and_show
from bench.report import Headline, target_headlines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="fresh-process runs (default 7; quick 1)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: one run")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "render.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "job.yaml"
        spec.write_text("name: cifar-dist\nresources: {workers: 4, gpus: 2}\n")
        jobset_spec = Path(tmp) / "jobset.yaml"
        jobset_spec.write_text("name: cifar-dist\nresources: {workers: 4, gpus: 2}\ndistribution: {backend: jobset}\n")
        cli, cli_jobset, bare = [], [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - started)
            for path, times in ((spec, cli), (jobset_spec, cli_jobset)):
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "cli.main", "render", str(path), "-o", str(Path(tmp) / path.stem)],
                    cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                )
                times.append(time.perf_counter() - started)
    from jobs.spec import parse_spec
    from k8s.jobset import build_jobset_objects
    from k8s.manifests import build_job_objects

    spec_obj = parse_spec({"name": "cifar-dist", "resources": {"workers": 4, "gpus": 2}})
    started = time.perf_counter()
    for _ in range(100):
        build_job_objects(spec_obj, run_id="r1")
    builder_ms = (time.perf_counter() - started) * 10
    jobset_obj = parse_spec({"name": "cifar-dist", "resources": {"workers": 4, "gpus": 2},
                             "distribution": {"backend": "jobset"}})
    started = time.perf_counter()
    for _ in range(100):
        build_jobset_objects(jobset_obj, run_id="r1")
    jobset_builder_ms = (time.perf_counter() - started) * 10
    result = {
        "render_cli_seconds_median": round(statistics.median(cli), 3),
        "render_cli_seconds_min": round(min(cli), 3),
        "render_jobset_cli_seconds_median": round(statistics.median(cli_jobset), 3),
        "render_jobset_over_job_ratio": round(statistics.median(cli_jobset) / statistics.median(cli), 3),
        "python_startup_seconds_median": round(statistics.median(bare), 3),
        "build_job_objects_ms": round(builder_ms, 3),
        "build_jobset_objects_ms": round(jobset_builder_ms, 3),
        "runs": args.runs,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "target_seconds": 1.0,
    }
    write_and_show(args.out, {**result, "machine": machine_info()})
    return result


# ================================================================================ report (bench.run_all)
def headlines(data: dict) -> list[Headline]:
    rows = target_headlines("render", data)
    if "render_cli_seconds_median" in data:
        t = data.get("target_seconds", 1.0)
        rows.insert(0, Headline("`jobctl render` start-up (bench_render)", f"{data['render_cli_seconds_median']:.2f} s",
                                f"≤ {t} s", data["render_cli_seconds_median"] <= t))
    return rows


if __name__ == "__main__":
    main()
