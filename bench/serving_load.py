"""The serving benchmark's load tools: a gRPC caller with pre-built requests, p50 of sequential calls, an
asynchronous load generator (`concurrency` calls in flight, each answer sends the next), and a server process'
CPU time and memory from /proc. bench_serving.py and serving_rest.py measure with them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from jobs.contract import INPUT_NAME


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, fn):
    """fn()'s result plus the server's CPU milliseconds per request during it."""
    c0 = cpu_seconds(pid)
    res = fn()
    res["server_cpu_ms_per_request"] = round((cpu_seconds(pid) - c0) * 1e3 / res["requests"], 3)
    return res


class Caller:
    """Pre-built requests on one channel: the client does as little Python work per call as possible."""

    def __init__(self, target: str):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    @staticmethod
    def request(model: str, x: np.ndarray):
        from tensorflow_serving.apis import predict_pb2

        from serving.tensors import from_ndarray

        req = predict_pb2.PredictRequest()
        req.model_spec.name = model
        req.inputs[INPUT_NAME].CopyFrom(from_ndarray(x))
        req.output_filter.append("probabilities")
        return req

    def call(self, req, timeout=30.0):
        return self.stub.Predict(req, timeout=timeout)


def p50_ms(fn, n: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def load(caller: Caller, req, total: int, concurrency: int) -> dict:
    """`total` requests keeping `concurrency` in flight: each answer's callback sends the next request.

    Futures with callbacks (not 32 Python threads) keep the client's own CPU per request small: on 2 shared
    cores, a thread-per-client load generator saturates before the server does.
    """
    import grpc

    lock = threading.Lock()
    done = threading.Event()
    state = {"sent": 0, "finished": 0}
    errors: list[str] = []
    latencies: list[float] = []

    def send():
        with lock:
            if state["sent"] >= total:
                return
            state["sent"] += 1
        t0 = time.perf_counter()
        fut = caller.stub.Predict.future(req, timeout=60)
        fut.add_done_callback(lambda f, t0=t0: finish(f, t0))

    def finish(f, t0):
        latency = time.perf_counter() - t0
        exc = f.exception()
        with lock:
            latencies.append(latency)
            if exc is not None:
                errors.append(f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.RpcError) else repr(exc))
            state["finished"] += 1
            last = state["finished"] >= total
        if last:
            done.set()
        else:
            send()

    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(min(concurrency, total)):
        send()
    if not done.wait(timeout=600):
        raise TimeoutError(f"load: {state['finished']} of {total} requests finished in 600 s")
    seconds = time.perf_counter() - t0
    client_cpu = time.process_time() - c0  # this process's CPU: the load generator (servers are other processes)
    lat = np.array(latencies) * 1e3
    return {"requests": total, "concurrency": concurrency, "seconds": round(seconds, 3), "rps": round(total / seconds, 1),
            "client_cpu_ms_per_request": round(client_cpu * 1e3 / total, 3),
            "errors": len(errors), "error_samples": errors[:3], "p50_ms": round(float(np.median(lat)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3)}
