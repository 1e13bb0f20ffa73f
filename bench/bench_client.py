"""The TensorFlow-free client (jobctl_client) against the `tensorflow-serving-api` client, side by side in one run:
import time, peak memory (RSS) of a process that imports the client and makes one Predict, and the installed size
of each one's dependency closure (site-packages bytes).

Each repetition runs two fresh processes, one per client, in alternating order, against the same server (the
empty-handler Predict of bench/grpc_floor.py, so the client's own cost is what differs). The TF Serving client does
what its users do: `tensorflow_serving.apis` stubs and `tf.make_tensor_proto` / `tf.make_ndarray`.

    python -m bench.bench_client [--repetitions 5] [--quick] [--out bench/out/client.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from bench.common import OUT_DIR, ROOT, Stat, add_common_args, free_port, machine_info, paired_ratio, repetitions, \
    write_and_show
from bench.report import Headline, fmt_stat
from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES

_PEAK = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
# argv: target, input name, output name. Prints {"import_s", "peak_rss_mb", "classes"}.
CHILDREN = {
    "jobctl_client": f"""
import sys, time, json
started = time.perf_counter()
import numpy as np
from jobctl_client import PredictClient
imported = time.perf_counter() - started
x = np.zeros((1, 8, 8, 1), np.uint8)
with PredictClient(sys.argv[1], "m", input_name=sys.argv[2], retries=0, timeout=30) as client:
    probs = client.predict(x)[sys.argv[3]]
print(json.dumps({{"import_s": imported, "peak_rss_mb": {_PEAK}, "classes": probs.shape[-1]}}))
""",
    "tensorflow_serving_api": f"""
import sys, time, json
started = time.perf_counter()
import numpy as np
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
imported = time.perf_counter() - started
x = np.zeros((1, 8, 8, 1), np.uint8)
request = predict_pb2.PredictRequest()
request.model_spec.name = "m"
request.inputs[sys.argv[2]].CopyFrom(tf.make_tensor_proto(x))
with grpc.insecure_channel(sys.argv[1]) as channel:
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
probs = tf.make_ndarray(response.outputs[sys.argv[3]])
print(json.dumps({{"import_s": imported, "peak_rss_mb": {_PEAK}, "classes": probs.shape[-1]}}))
""",
}
DISTRIBUTIONS = {"jobctl_client": "jobctl-client", "tensorflow_serving_api": "tensorflow-serving-api"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _dist_bytes(dist: metadata.Distribution) -> int:
    """Bytes of the files a distribution installed; an editable install counts its package's source files."""
    total = sum(p.stat().st_size for f in dist.files or [] if (p := Path(dist.locate_file(f))).is_file())
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        src = Path(urlparse(json.loads(direct)["url"]).path)
        total += sum(p.stat().st_size for p in src.rglob("*.py") if "__pycache__" not in p.parts
                     and not any(part.startswith(".") for part in p.relative_to(src).parts))
    return total


def closure(root: str) -> dict[str, int]:
    """{distribution: installed bytes} for `root` and everything it requires (markers for this interpreter)."""
    from packaging.requirements import Requirement

    sizes: dict[str, int] = {}
    todo = [root]
    while todo:
        name = _canonical(todo.pop())
        if name in sizes:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sizes[name] = 0
            continue
        sizes[name] = _dist_bytes(dist)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sizes


def run_child(kind: str, target: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)  # each client as an app sees it: what is installed, not this checkout
    proc = subprocess.run([sys.executable, "-c", CHILDREN[kind], target, INPUT_NAME, OUTPUT_PROBABILITIES],
                          capture_output=True, text=True, timeout=300, env=env, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} client exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    reps = repetitions(args)
    out = args.out or OUT_DIR / "client.json"
    port = free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--port", str(port), "--workers", "4"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: dict[str, list[dict]] = {k: [] for k in CHILDREN}
    try:
        _wait_for_port(port, server)
        for rep in range(reps):
            order = list(CHILDREN) if rep % 2 == 0 else list(reversed(CHILDREN))
            for kind in order:
                samples[kind].append(run_child(kind, f"127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result: dict = {"repetitions": reps, "load_average_1m": round(os.getloadavg()[0], 2), "clients": {}}
    for kind, rows in samples.items():
        sizes = closure(DISTRIBUTIONS[kind])
        result["clients"][kind] = {
            "import_seconds": Stat.of([r["import_s"] for r in rows]).as_dict(),
            "peak_rss_mb": Stat.of([r["peak_rss_mb"] for r in rows]).as_dict(1),
            "installed_mb": round(sum(sizes.values()) / 1e6, 1),
            "distributions": {k: round(v / 1e6, 2) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])},
        }
    c, t = samples["jobctl_client"], samples["tensorflow_serving_api"]
    result["ratios"] = {  # tensorflow-serving-api over jobctl_client: how many times more it costs
        "import_time": paired_ratio([r["import_s"] for r in t], [r["import_s"] for r in c]).as_dict(),
        "peak_rss": paired_ratio([r["peak_rss_mb"] for r in t], [r["peak_rss_mb"] for r in c]).as_dict(),
        "installed_size": round(result["clients"]["tensorflow_serving_api"]["installed_mb"]
                                / max(result["clients"]["jobctl_client"]["installed_mb"], 1e-9), 1),
    }
    return write_and_show(out, {**result, "quick": args.quick, "machine": machine_info()})


def _wait_for_port(port: int, server: subprocess.Popen, timeout: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"bench.grpc_floor exited with {server.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"bench.grpc_floor did not listen on {port} within {timeout} s")


# ================================================================================ report (bench.run_all)
def headlines(data: dict) -> list[Headline]:
    clients, ratios = data.get("clients", {}), data.get("ratios", {})
    if "jobctl_client" not in clients:
        return []
    c, t = clients["jobctl_client"], clients["tensorflow_serving_api"]
    return [
        Headline("TF-free client import time vs tensorflow-serving-api (bench_client)",
                 f"{fmt_stat(c['import_seconds'], 2, ' s')} vs {fmt_stat(t['import_seconds'], 2, ' s')}: "
                 f"{fmt_stat(ratios['import_time'], 1, 'x')}", "—", None),
        Headline("TF-free client peak RSS, import + one Predict (bench_client)",
                 f"{c['peak_rss_mb']['median']:.0f} MB vs {t['peak_rss_mb']['median']:.0f} MB: "
                 f"{fmt_stat(ratios['peak_rss'], 1, 'x')}", "—", None),
        Headline("TF-free client installed size with dependencies (bench_client)",
                 f"{c['installed_mb']:.0f} MB vs {t['installed_mb']:,.0f} MB: {ratios['installed_size']}x", "—", None),
    ]


if __name__ == "__main__":
    main()
