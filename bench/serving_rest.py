"""REST :predict against gRPC Predict on the same `jobctl serve` (batching off), in bench_serving's run: p50 of
sequential batch-1 requests, and throughput at 32 concurrent clients, as ratios REST/gRPC (latency) and
REST/gRPC (requests per second), repetitions interleaved.

The REST load generator is as cheap as the gRPC one: asyncio with 32 keep-alive HTTP/1.1 connections, each
sending its next request when the answer arrives, the request bytes built once. It does not parse the answers
beyond their length and status (a real client would, on its own CPU).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import numpy as np

from bench.common import Stat, paired_ratio
from bench.serving_load import cpu_seconds, load, p50_ms
from jobs.contract import INPUT_NAME


def body(x: np.ndarray) -> bytes:
    """The columnar form, the compact one. REST has no output_filter: its answer carries class_ids beside the
    probabilities that the gRPC request filters to (a few more bytes for REST)."""
    return json.dumps({"inputs": {INPUT_NAME: x.tolist()}}).encode()


class RestCaller:
    def __init__(self, port: int, model: str, payload: bytes):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path, self.payload = f"/v1/models/{model}:predict", payload

    def call(self):
        self.conn.request("POST", self.path, body=self.payload, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST {response.status}: {data[:300]!r}")
        return data

    def close(self):
        self.conn.close()


async def _client(port: int, request: bytes, state: dict, total: int, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while state["sent"] < total:
            state["sent"] += 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def rest_load(port: int, model: str, payload: bytes, total: int, concurrency: int) -> dict:
    request = (f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    state, latencies, errors = {"sent": 0}, [], []

    async def main():
        await asyncio.gather(*[_client(port, request, state, total, latencies, errors) for _ in range(concurrency)])

    t0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(main())
    seconds = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return {"requests": total, "concurrency": concurrency, "seconds": round(seconds, 3), "rps": round(total / seconds, 1),
            "client_cpu_ms_per_request": round((time.process_time() - c0) * 1e3 / total, 3), "errors": len(errors),
            "p50_ms": round(float(np.median(lat)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3)}


def compare(handle, grpc_caller, grpc_request, x1: np.ndarray, model: str, reps: int, n_lat: int, n_tput: int) -> dict:
    """REST vs gRPC on one server (`handle`: bench_serving's ServerHandle, with `rest_port` and `pid`)."""
    payload = body(x1)
    rest = RestCaller(handle.rest_port, model, payload)
    try:
        rest.call()  # the first request warms up the REST path
        rest_p50, grpc_p50, rest_runs, grpc_runs = [], [], [], []
        for rep in range(reps):
            for which in (("rest", "grpc") if rep % 2 == 0 else ("grpc", "rest")):
                if which == "rest":
                    rest_p50.append(p50_ms(rest.call, n_lat))
                else:
                    grpc_p50.append(p50_ms(lambda: grpc_caller.call(grpc_request), n_lat))
            for which in (("rest", "grpc") if rep % 2 == 0 else ("grpc", "rest")):
                c0 = cpu_seconds(handle.pid)
                run = (rest_load(handle.rest_port, model, payload, n_tput, 32) if which == "rest"
                       else load(grpc_caller, grpc_request, n_tput, 32))
                run["server_cpu_ms_per_request"] = round((cpu_seconds(handle.pid) - c0) * 1e3 / run["requests"], 3)
                (rest_runs if which == "rest" else grpc_runs).append(run)
    finally:
        rest.close()
    latency = paired_ratio(rest_p50, grpc_p50)
    throughput = paired_ratio([r["rps"] for r in rest_runs], [r["rps"] for r in grpc_runs])
    return {
        "rest_p50_ms": Stat.of(rest_p50).as_dict(3), "grpc_p50_ms": Stat.of(grpc_p50).as_dict(3),
        "latency_ratio_stat": latency.as_dict(2), "latency_ratio": round(latency.median, 2),
        "rest_rps": Stat.of([r["rps"] for r in rest_runs]).as_dict(1), "grpc_rps": Stat.of([r["rps"] for r in grpc_runs]).as_dict(1),
        "throughput_ratio_stat": throughput.as_dict(2), "throughput_ratio": round(throughput.median, 2),
        "rest_runs": rest_runs, "grpc_runs": grpc_runs, "request_bytes": len(payload),
        "note": "REST/gRPC: latency ratio above 1 = REST slower; throughput ratio below 1 = REST serves fewer",
    }
