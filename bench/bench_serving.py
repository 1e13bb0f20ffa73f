"""Serving benchmarks (issue 6 §7), each a ratio measured side by side in one run on this machine:

1. gRPC Predict, batch 1, p50 vs the same SavedModel called in-process: target gRPC <= in-process + 1 ms.
2. 32 concurrent batch-1 clients: throughput with server-side batching on vs off: target >= 3x.
3. The fused ensemble of 3 vs 3 separate member requests from the client (sequential): target >= 2x faster.
4. 10,000 requests at concurrency 32: target zero errors; the server's memory is reported.
5. REST :predict vs gRPC Predict (bench/serving_rest.py): p50 at batch 1 and throughput at 32 clients, as ratios.

Servers are `jobctl serve` subprocesses (one with batching, one without) serving the ensemble and its members
from one TF Serving model config file. A third process, bench/grpc_floor.py, answers Predict with an empty handler:
measured with the same client in the same run, it shows how much of the latency and of the CPU per request is
Python gRPC itself, which no Python server can remove. The load generator runs in this process, as asynchronous gRPC calls (one
channel, 32 calls in flight, each answer sends the next): it costs about 0.2 ms of CPU per request, where 32
client processes making blocking calls cost 0.6 ms (measured; docs/serving.md). On a 2-core machine every
millisecond the clients spend is taken from the servers, so the cheaper client is the fairer measurement.

    python -m bench.bench_serving            # full run (seed-style CNNs on 32x32x3, about 2-3 minutes)
    python -m bench.bench_serving --quick    # smoke run (tiny models, a few seconds of load)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from bench.common import ROOT, Stat, paired_ratio, write_json
from bench.common import free_port as _free_port
from bench import serving_rest
from bench.serving_load import Caller, load, measured, p50_ms, rss_mb
from jobs.contract import INPUT_NAME, SIGNATURE_NAME

MEMBERS = ("m0", "m1", "m2")
# One TensorFlow intra-op thread per model call, in the servers and in the in-process baseline alike: with many
# concurrent small requests on 2 cores this is faster than TF's default pool (measured: batch-1 CPU 0.36 vs 0.72 ms).
INTRA_OP = 1
# Server-side batching of the "on" server (TF Serving's batching_parameters names). One batch thread: with two,
# concurrent requests split into two half-size batches (measured: fewer requests per second, docs/serving.md);
# the timeout barely matters between 0.5 and 4 ms.
BATCHING = {"max_batch_size": 32, "batch_timeout_micros": 1000, "num_batch_threads": 1}
WORKERS = {"grpc_workers": 64}


def build_models(root: Path, quick: bool) -> tuple[list[Path], Path, tuple]:
    """Three members of the seed-style CNN (Conv32-Pool-Conv64-Pool-Dense64-Dense10, ANCHORS.md) with different
    widths and seeds, untrained (latency does not depend on the weights), and their ensemble."""
    import keras
    import tensorflow as tf

    from serving.ensemble import build_ensemble

    shape = (8, 8, 1) if quick else (32, 32, 3)
    paths = []
    for i, name in enumerate(MEMBERS):
        keras.utils.set_random_seed(i)
        if quick:
            layers = [keras.layers.Flatten(), keras.layers.Dense(16 * (i + 1), activation="relu")]
        else:
            w = 1 + i % 2
            layers = [keras.layers.Conv2D(32 * w, 3, activation="relu"), keras.layers.MaxPooling2D(),
                      keras.layers.Conv2D(64 * w, 3, activation="relu"), keras.layers.MaxPooling2D(),
                      keras.layers.Flatten(), keras.layers.Dense(64, activation="relu")]
        model = keras.Sequential([keras.Input(shape), keras.layers.Rescaling(1 / 255.0), *layers, keras.layers.Dense(10)])

        class Servable(tf.Module):
            def __init__(self, m):
                super().__init__()
                self.model = m

            @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name=INPUT_NAME)])
            def serve(self, images):
                p = tf.nn.softmax(self.model(tf.cast(images, tf.float32), training=False))
                return {"probabilities": p, "class_ids": tf.argmax(p, -1, output_type=tf.int64)}

        s = Servable(model)
        out = root / name / "1"
        tf.saved_model.save(s, str(out), signatures={SIGNATURE_NAME: s.serve})
        (out / "jobctl.json").write_text(json.dumps({"model_name": name, "class_names": [str(c) for c in range(10)],
                                                    "input_shape": list(shape), "input_dtype": "uint8"}))
        paths.append(out)
    ensemble = build_ensemble(paths, root / "ensemble", include_member_probabilities=False)
    return paths, ensemble, shape


class _Handle:
    """A server as a subprocess (`proc`, `log`) or in this process (`server`, with `stop(grace=...)`)."""

    in_process: bool
    label = "server"

    def _spawn(self, cmd: list[str], log: Path) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def check(self):
        if not self.in_process and self.proc.poll() is not None:
            raise RuntimeError(f"the {self.label} exited with {self.proc.returncode}; log: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.in_process:
            self.server.stop(grace=1)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ServerHandle(_Handle):
    """A `jobctl serve` subprocess, or (smoke runs) an in-process ModelServer: same pid/target/stop interface."""

    def __init__(self, root: Path, bases: dict, batching: bool, in_process: bool = False):
        self.in_process = in_process
        if in_process:
            from serving.model_servers.config import BatchingConfig, ModelEntry, ServerConfig
            from serving.model_servers.server import ModelServer

            cfg = ServerConfig("", Path(""), port=0, host="127.0.0.1", poll_seconds=3600,
                               extra_models=[ModelEntry(n, Path(b)) for n, b in bases.items()],
                               batching=BatchingConfig(batching, BATCHING["max_batch_size"],
                                                       BATCHING["batch_timeout_micros"], BATCHING["num_batch_threads"]))
            cfg.rest_api_port = 0
            self.server = ModelServer(cfg).start()
            self.pid, self.target = os.getpid(), f"127.0.0.1:{self.server.port}"
            self.rest_port = self.server.rest_port
            self.metrics_port = None
            return
        config = root / f"models-{int(batching)}.config"
        config.write_text("model_config_list {\n" + "".join(
            f'  config {{ name: "{n}" base_path: "{b}" model_platform: "tensorflow" }}\n' for n, b in bases.items()) + "}\n")
        port, self.metrics_port, self.rest_port = _free_port(), _free_port(), _free_port()
        cmd = [sys.executable, "-m", "cli.main", "serve", "--model-config-file", str(config), "--port", str(port),
               "--rest-api-port", str(self.rest_port),
               "--host", "127.0.0.1", "--poll-seconds", "3600", "--workers", str(WORKERS["grpc_workers"]), "--intra-op-threads", str(INTRA_OP),
               "--metrics-port", str(self.metrics_port)]
        if batching:
            cmd += ["--enable-batching", "--max-batch-size", str(BATCHING["max_batch_size"]),
                    "--batch-timeout-micros", str(BATCHING["batch_timeout_micros"]),
                    "--num-batch-threads", str(BATCHING["num_batch_threads"])]
        self._spawn(cmd, root / f"server-{int(batching)}.log")
        self.pid, self.target = self.proc.pid, f"127.0.0.1:{port}"

    def mean_batch_size(self) -> float:
        """Examples per model call so far, from the server's Prometheus metrics."""
        if self.in_process:
            text = self.server.metrics.text()
        else:
            import urllib.request

            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith("jobctl_serving_batch_size_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("jobctl_serving_batch_size_count"):
                count += float(line.rsplit(" ", 1)[1])
        return round(total / count, 2) if count else 0.0


class FloorHandle(_Handle):
    """bench/grpc_floor.py (Predict with an empty handler) as a process, or in this process for smoke runs: the
    same interface as ServerHandle."""

    label = "floor server"

    def __init__(self, root: Path, in_process: bool = False):
        from bench import grpc_floor

        self.in_process = in_process
        if in_process:
            self.server, port = grpc_floor.start(0, WORKERS["grpc_workers"])
            self.pid, self.target = os.getpid(), f"127.0.0.1:{port}"
            return
        port = _free_port()
        self._spawn([sys.executable, "-m", "bench.grpc_floor", "--port", str(port), "--workers",
                     str(WORKERS["grpc_workers"])], root / "floor.log")
        self.pid, self.target = self.proc.pid, f"127.0.0.1:{port}"

    def wait_ready(self, caller: "Caller", req, timeout: float = 60.0):
        import grpc

        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                return caller.call(req, timeout=5)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def model_cpu_ms_per_image(sig, shape: tuple, batch: int, calls: int) -> float:
    """CPU milliseconds per image of the model called in-process at `batch` (the median of 3 runs)."""
    from serving import savedmodel

    x = np.random.default_rng(1).integers(0, 256, size=(batch, *shape), dtype=np.uint8)
    for _ in range(5):
        savedmodel.call(sig, {INPUT_NAME: x})
    runs = []
    for _ in range(3):
        c0 = time.process_time()
        for _ in range(calls):
            savedmodel.call(sig, {INPUT_NAME: x})
        runs.append((time.process_time() - c0) * 1e3 / (calls * batch))
    return float(np.median(runs))


def run(quick: bool = False, out: Path | None = None, prebuilt: tuple | None = None, in_process: bool = False,
        reps: Optional[int] = None) -> dict:
    """`prebuilt`: (three member version dirs, ensemble version dir, input shape) to skip building models.
    `in_process`: servers in this process (a fast smoke test of the code path; the figures then mean little,
    client and server share one interpreter)."""
    import tensorflow as tf

    from serving import savedmodel
    from serving.client import PredictClient

    if not in_process:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(INTRA_OP)
        except RuntimeError:
            pass  # TensorFlow already running in this process

    reps = reps or (1 if quick else 3)
    n_lat = 60 if quick else 1000
    n_tput = 300 if quick else 4000
    n_soak = 500 if quick else 10_000
    root = Path(tempfile.mkdtemp(prefix="jobctl-bench-serving-"))
    procs = []
    try:
        members, ensemble, shape = prebuilt or build_models(root, quick)
        bases = {**{n: Path(m).parent for n, m in zip(MEMBERS, members)}, "ensemble": Path(ensemble).parent}
        plain = ServerHandle(root, bases, batching=False, in_process=in_process)
        procs.append(plain)
        batched = ServerHandle(root, bases, batching=True, in_process=in_process)
        procs.append(batched)
        floor = FloorHandle(root, in_process=in_process)
        procs.append(floor)
        plain_target, batched_target = plain.target, batched.target

        rng = np.random.default_rng(0)
        x1 = rng.integers(0, 256, size=(1, *shape), dtype=np.uint8)

        for target in (plain_target, batched_target):
            with PredictClient(target, "ensemble") as c:
                c.wait_until_available(timeout=300)
        sig = savedmodel.load(members[0]).signatures[SIGNATURE_NAME]
        caller, bcaller, fcaller = Caller(plain_target), Caller(batched_target), Caller(floor.target)
        req_m0, req_ens = Caller.request("m0", x1), Caller.request("ensemble", x1)
        floor.wait_ready(fcaller, req_m0)
        reqs = [Caller.request(m, x1) for m in MEMBERS]

        # Repetitions interleave baseline and candidate (bench/common.py conventions): load bursts from other
        # processes land on both sides of each ratio; the median and the spread are reported.
        inproc_s, grpc_s, floor_s, off_runs, on_runs, floor_runs, fused_s, separate_s = [], [], [], [], [], [], [], []
        for rep in range(reps):
            # 1. batch 1, one member: the same SavedModel in-process vs through gRPC; and the same request to the
            # empty handler, the part of the round trip that is Python gRPC alone
            inproc_s.append(p50_ms(lambda: savedmodel.call(sig, {INPUT_NAME: x1}), n_lat))
            grpc_s.append(p50_ms(lambda: caller.call(req_m0), n_lat))
            floor_s.append(p50_ms(lambda: fcaller.call(req_m0), n_lat))
            # 2. 32 concurrent batch-1 clients on one member: batching off vs on (order alternates)
            pair = {}
            for which in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                handle, c = (plain, caller) if which == "off" else (batched, bcaller)
                pair[which] = measured(handle.pid, lambda: load(c, req_m0, n_tput, 32))
            off_runs.append(pair["off"])
            on_runs.append(pair["on"])
            floor_runs.append(measured(floor.pid, lambda: load(fcaller, req_m0, n_tput, 32)))
            # 3. the fused ensemble vs its 3 members requested one after the other, batch 1
            fused_s.append(p50_ms(lambda: caller.call(req_ens), n_lat))
            separate_s.append(p50_ms(lambda: [caller.call(r) for r in reqs], n_lat))

        overhead = Stat.of([g - i for g, i in zip(grpc_s, inproc_s)])
        # The overhead split in two: Python gRPC itself (the empty handler's round trip) and the rest (the model
        # called inside a server, between requests, instead of back to back; this server's own code).
        beyond_floor = Stat.of([g - f - i for g, f, i in zip(grpc_s, floor_s, inproc_s)])
        r1 = {"in_process_p50_ms": Stat.of(inproc_s).as_dict(3), "grpc_p50_ms": Stat.of(grpc_s).as_dict(3),
              "overhead_ms": overhead.as_dict(3), "value": round(overhead.median, 3),
              "empty_handler_p50_ms": Stat.of(floor_s).as_dict(3), "overhead_beyond_empty_handler_ms": beyond_floor.as_dict(3),
              "target": "gRPC p50 <= in-process p50 + 1 ms", "met": overhead.median <= 1.0}
        ratio2 = paired_ratio([r["rps"] for r in on_runs], [r["rps"] for r in off_runs])
        # What bounds the ratio: batching only shrinks the model's share of a request's CPU. With 2 cores shared
        # by servers and clients, throughput follows CPU per request (server + client), so on/off is at most
        # (overhead + model at batch 1) / (overhead + model per image at batch B): 3x needs an overhead of at most
        # (m1 - 3 mB) / 2 per request, whatever the server.
        mb = BATCHING["max_batch_size"]
        m1 = model_cpu_ms_per_image(sig, shape, 1, 50 if quick else 400)
        mB = model_cpu_ms_per_image(sig, shape, mb, 5 if quick else 30)
        cpu_on = Stat.of([r["server_cpu_ms_per_request"] + r["client_cpu_ms_per_request"] for r in on_runs]).median
        cpu_off = Stat.of([r["server_cpu_ms_per_request"] + r["client_cpu_ms_per_request"] for r in off_runs]).median
        # The empty handler under the same load: the CPU per request (server + client) that Python gRPC costs
        # before any work. Two servers costing only that plus the model would give (m1 + o) / (mB + o): the measured
        # ratio is above it only as far as the unbatched server wastes CPU on 32 concurrent model calls.
        o_floor = Stat.of([r["server_cpu_ms_per_request"] + r["client_cpu_ms_per_request"] for r in floor_runs]).median
        client_on = Stat.of([r["client_cpu_ms_per_request"] for r in on_runs]).median
        bound = {"model_cpu_ms_per_image_batch_1": round(m1, 3), f"model_cpu_ms_per_image_batch_{mb}": round(mB, 3),
                 "model_only_ratio": round(m1 / mB, 2), "max_overhead_ms_for_3x": round(max(0.0, (m1 - 3 * mB) / 2), 3),
                 "empty_handler_cpu_ms_per_request": round(o_floor, 3),
                 "empty_handler_rps": Stat.of([r["rps"] for r in floor_runs]).as_dict(1),
                 "ratio_with_servers_as_cheap_as_the_empty_handler": round((m1 + o_floor) / (mB + o_floor), 2),
                 # and with servers that cost nothing at all: the client's own CPU still shares the 2 cores
                 "ratio_with_servers_that_cost_nothing": round((m1 + client_on) / (mB + client_on), 2),
                 "overhead_ms_per_request_on": round(cpu_on - mB, 3), "overhead_ms_per_request_off": round(cpu_off - m1, 3),
                 "cpu_ms_per_request_off_over_on": round(cpu_off / cpu_on, 2) if cpu_on else None}
        r2 = {"batching_off": off_runs, "batching_on": on_runs, "mean_batch_size": batched.mean_batch_size(),
              "rps_off": Stat.of([r["rps"] for r in off_runs]).as_dict(1),
              "rps_on": Stat.of([r["rps"] for r in on_runs]).as_dict(1),
              "server_cpu_ms_per_request_off": Stat.of([r["server_cpu_ms_per_request"] for r in off_runs]).as_dict(3),
              "server_cpu_ms_per_request_on": Stat.of([r["server_cpu_ms_per_request"] for r in on_runs]).as_dict(3),
              "client_cpu_ms_per_request_off": Stat.of([r["client_cpu_ms_per_request"] for r in off_runs]).as_dict(3),
              "client_cpu_ms_per_request_on": Stat.of([r["client_cpu_ms_per_request"] for r in on_runs]).as_dict(3),
              "bound": bound,
              "ratio_stat": ratio2.as_dict(2), "ratio": round(ratio2.median, 2), "target": ">= 3x", "met": ratio2.median >= 3}
        ratio3 = paired_ratio(separate_s, fused_s)
        r3 = {"fused_p50_ms": Stat.of(fused_s).as_dict(3), "three_requests_p50_ms": Stat.of(separate_s).as_dict(3),
              "ratio_stat": ratio3.as_dict(2), "ratio": round(ratio3.median, 2), "target": ">= 2x", "met": ratio3.median >= 2}

        # 5. REST :predict vs gRPC Predict on the unbatched server, batch 1 and 32 clients (bench/serving_rest.py)
        r5 = serving_rest.compare(plain, caller, req_m0, x1, "m0", reps, n_lat, n_tput)

        # 4. soak: the ensemble, concurrency 32, with batching (the production setting)
        before = rss_mb(batched.pid)
        soak = measured(batched.pid, lambda: load(bcaller, req_ens, n_soak, 32))
        after = rss_mb(batched.pid)
        r4 = {**soak, "server_rss_mb_before": round(before[0], 1), "server_rss_mb_after": round(after[0], 1),
              "server_peak_rss_mb": round(after[1], 1), "value": soak["errors"], "target": "0 errors",
              "met": soak["errors"] == 0}

        for p in procs:
            p.check()
        result = {"quick": quick, "repetitions": reps, "in_process_servers": in_process, "batching": dict(BATCHING), "intra_op_threads": INTRA_OP, "grpc_workers": WORKERS["grpc_workers"], "model": "digits MLPs 8x8x1" if quick else "seed-style CNNs 32x32x3",
                  "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                  "latency_batch1": r1, "batching_throughput": r2, "ensemble_fused_vs_separate": r3, "soak": r4,
                  "rest_vs_grpc": r5}
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(root, ignore_errors=True)
    if out:
        write_json(out, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and few requests (a smoke test)")
    parser.add_argument("--in-process", action="store_true", help="servers in this process (smoke only)")
    parser.add_argument("--max-batch-size", type=int, default=BATCHING["max_batch_size"])
    parser.add_argument("--batch-timeout-micros", type=int, default=BATCHING["batch_timeout_micros"])
    parser.add_argument("--num-batch-threads", type=int, default=BATCHING["num_batch_threads"])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    parser.add_argument("--workers", type=int, default=WORKERS["grpc_workers"], help="gRPC threads per server")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "serving.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    BATCHING.update(max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
                    num_batch_threads=args.num_batch_threads)
    WORKERS["grpc_workers"] = args.workers
    result = run(quick=args.quick, out=args.out, in_process=args.in_process, reps=args.reps)
    r1, r2, r3, r4 = (result[k] for k in ("latency_batch1", "batching_throughput", "ensemble_fused_vs_separate", "soak"))
    mark = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(f"model: {result['model']}, {result['cpus']} CPUs, load average {result['load_average'][0]:.1f}")
    print(f"1. batch-1 p50: in-process {r1['in_process_p50_ms']['median']:.3f} ms, gRPC {r1['grpc_p50_ms']['median']:.3f} ms "
          f"(+{r1['value']:.3f} ms, spread {r1['overhead_ms']['min']:.3f}..{r1['overhead_ms']['max']:.3f}; "
          f"target +1 ms: {mark(r1['met'])}); empty handler {r1['empty_handler_p50_ms']['median']:.3f} ms, "
          f"leaving {r1['overhead_beyond_empty_handler_ms']['median']:+.3f} ms to the server")
    print(f"2. 32 clients: batching off {r2['rps_off']['median']:.0f} req/s, on {r2['rps_on']['median']:.0f} req/s "
          f"= {r2['ratio']:.2f}x (spread {r2['ratio_stat']['min']:.2f}..{r2['ratio_stat']['max']:.2f}; target 3x: "
          f"{mark(r2['met'])}); server CPU per request {r2['server_cpu_ms_per_request_off']['median']:.2f} ms off, "
          f"{r2['server_cpu_ms_per_request_on']['median']:.2f} ms on (mean batch {r2['mean_batch_size']})")
    b = r2["bound"]
    print(f"   bound: model alone {b['model_cpu_ms_per_image_batch_1']:.3f} ms/image at batch 1, "
          f"{b['model_cpu_ms_per_image_batch_' + str(BATCHING['max_batch_size'])]:.3f} at batch {BATCHING['max_batch_size']} "
          f"({b['model_only_ratio']:.2f}x); 3x needs <= {b['max_overhead_ms_for_3x']:.3f} ms of other CPU per request, "
          f"measured {b['overhead_ms_per_request_on']:.3f} ms on (server + client), {b['overhead_ms_per_request_off']:.3f} ms off; "
          f"client CPU {r2['client_cpu_ms_per_request_on']['median']:.2f} ms/request")
    print(f"   an empty Python gRPC handler costs {b['empty_handler_cpu_ms_per_request']:.3f} ms of CPU per request (server + "
          f"client): two servers costing only that plus the model would give "
          f"{b['ratio_with_servers_as_cheap_as_the_empty_handler']:.2f}x; servers costing nothing, "
          f"{b['ratio_with_servers_that_cost_nothing']:.2f}x (the client's own CPU)")
    print(f"3. ensemble fused {r3['fused_p50_ms']['median']:.3f} ms vs 3 requests {r3['three_requests_p50_ms']['median']:.3f} ms "
          f"= {r3['ratio']:.2f}x (spread {r3['ratio_stat']['min']:.2f}..{r3['ratio_stat']['max']:.2f}; target 2x: {mark(r3['met'])})")
    print(f"4. {r4['requests']} requests at concurrency 32: {r4['errors']} errors, {r4['rps']:.0f} req/s, "
          f"p99 {r4['p99_ms']:.1f} ms, server RSS {r4['server_rss_mb_after']:.0f} MB (peak {r4['server_peak_rss_mb']:.0f} MB)")
    r5 = result["rest_vs_grpc"]
    print(f"5. REST vs gRPC (batching off): batch-1 p50 {r5['rest_p50_ms']['median']:.3f} vs {r5['grpc_p50_ms']['median']:.3f} ms "
          f"= {r5['latency_ratio']:.2f}x; 32 clients {r5['rest_rps']['median']:.0f} vs {r5['grpc_rps']['median']:.0f} req/s "
          f"= {r5['throughput_ratio']:.2f}x (spread {r5['throughput_ratio_stat']['min']:.2f}..{r5['throughput_ratio_stat']['max']:.2f})")
    print(f"written to {args.out}")
    return 0


# ================================================================================ report (bench.run_all)
def headlines(data: dict) -> list:
    """The targets' rows, and REST against gRPC (no target: the price of JSON, measured side by side)."""
    from bench.report import Headline, fmt_stat, target_headlines

    rows = target_headlines("serving", data)
    r5 = data.get("rest_vs_grpc") if isinstance(data, dict) else None
    if r5:
        rows += [
            Headline("serving: REST :predict vs gRPC Predict, batch-1 p50 (above 1: REST slower)",
                     f"{r5['rest_p50_ms']['median']:.2f} vs {r5['grpc_p50_ms']['median']:.2f} ms: "
                     f"{fmt_stat(r5['latency_ratio_stat'], 2, 'x')}", "—", None),
            Headline("serving: REST vs gRPC throughput at 32 clients (below 1: REST serves fewer)",
                     f"{r5['rest_rps']['median']:.0f} vs {r5['grpc_rps']['median']:.0f} req/s: "
                     f"{fmt_stat(r5['throughput_ratio_stat'], 2, 'x')}", "—", None),
        ]
    return rows


def figures(data: dict, canvas) -> None:
    """Every ratio this module measured side by side, its target under its bar."""
    serving = data
    if isinstance(serving, dict):
        labels, stats, targets = [], [], []
        for key, v in serving.items():
            if isinstance(v, dict) and isinstance(v.get("ratio_stat"), dict):
                labels.append(key.replace("_", " ").replace(" vs ", "\nvs "))
                stats.append(v["ratio_stat"])
                targets.append(v.get("target", ""))
        if stats:
            fig, ax = canvas.plt.subplots(figsize=(7, 4))
            canvas.bars(ax, labels, stats, "tab:red")
            for i, t in enumerate(targets):
                ax.text(i, 0.05, str(t), ha="center", fontsize=8, color="white")
            ax.set_title("Serving: ratios measured side by side (target under each bar)")
            canvas.save(fig, "serving.png")


if __name__ == "__main__":
    sys.exit(main())
