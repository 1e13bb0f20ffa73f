"""A TensorFlow-Serving-compatible gRPC server for development and tests (production runs `tensorflow/serving`).

It speaks TF Serving's own protos (`tensorflow_serving.apis`), so clients cannot tell the two apart:
PredictionService {Predict, GetModelMetadata, Classify}, ModelService {GetModelStatus}, gRPC health and
reflection. Status codes and messages follow TF Serving (docs/serving.md lists them); shapes are checked before
the model runs, which TF Serving leaves to kernel errors (tensorflow/serving#1527).

Design:
- `ModelManager` polls the base path, loads new integer versions on its own thread, warms them up, and swaps them
  in only once AVAILABLE; a version that fails to load or warm up is logged, reported by GetModelStatus, and
  never replaces a working one. A version directory must look the same on two consecutive polls before it is
  loaded, so a copy in progress is not read half-way.
- `Batcher` merges concurrent requests for one signature into one model call (max batch size, timeout, threads,
  queue bound), which is where throughput comes from on CPU.
- Two gRPC transports, the faster one for each mode (measured, docs/serving.md): with batching, grpc.aio, where
  a request awaits its batch on one event loop and the batch thread wakes the loop once per batch; without,
  grpc's thread pool, where each request runs the model on its own thread (an asyncio hop only adds to that).
- Every request is validated against the signature (names, dtypes, shapes, batch limits) before it reaches
  TensorFlow: bad input costs one INVALID_ARGUMENT, never the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import grpc
import numpy as np

from serving import savedmodel
from serving.savedmodel import DEFAULT_SIGNATURE, LoadedModel, Signature
from serving.tensors import TensorError, dtype_name, format_shape, shape_mismatch, to_ndarray, write_ndarray

log = logging.getLogger("jobctl.serving")

# ModelVersionStatus.State
UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END = 0, 10, 20, 30, 40, 50
STATE_NAMES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class BatchingConfig:
    """Mirrors TF Serving's batching_parameters: the same names, so one config describes both servers."""

    enabled: bool = False
    max_batch_size: int = 32
    # 1000 us and one batch thread: measured by bench/bench_serving.py (32 clients); a second thread splits the
    # queue into two half-size batches on this Python server, and timeouts 0..4000 us were within noise.
    batch_timeout_micros: int = 1000
    num_batch_threads: int = 1
    max_enqueued_batches: int = 64


@dataclass
class ServerConfig:
    model_name: str
    base_path: Path
    port: int = 8500
    host: str = "0.0.0.0"
    poll_seconds: float = 1.0  # TF Serving's --file_system_poll_wait_seconds
    num_versions: int = 1  # version policy latest{num_versions}
    labels: dict[str, int] = field(default_factory=dict)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_request_batch_size: int = 4096
    max_workers: int = 64
    metrics_port: Optional[int] = None  # Prometheus /metrics; None disables
    warmup: bool = True
    # jobctl's own GetModelMetadata field "jobctl" (jobctl.json); off = behave exactly like stock TF Serving
    jobctl_metadata: bool = True
    # TensorFlow's thread pools (TF Serving: --tensorflow_intra_op_parallelism / _inter_op_): 0 = TF's default.
    # Under many concurrent small requests, 1 intra-op thread per call avoids thread hand-offs and spinning.
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    # gRPC transport: asyncio (one event loop; requests wait for their batch without holding a thread) or a
    # thread per in-flight RPC. None = asyncio exactly when batching is on: each is the faster one for its mode
    # (measured, docs/serving.md "Benchmarks": batched, +26% req/s at 32 clients; unbatched, threads 701 vs 559 req/s).
    grpc_asyncio: Optional[bool] = None
    tls_cert: Optional[Path] = None  # PEM certificate chain and key: the port speaks TLS only
    tls_key: Optional[Path] = None
    # more models beside model_name/base_path (TF Serving's --model_config_file): name -> ModelEntry
    extra_models: list["ModelEntry"] = field(default_factory=list)


@dataclass
class ModelEntry:
    name: str
    base_path: Path
    num_versions: int = 1
    labels: dict[str, int] = field(default_factory=dict)


def read_model_config(path: Path) -> list[ModelEntry]:
    """TF Serving's ModelServerConfig text proto (serving/config/models.config) -> entries."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    try:
        cfg = text_format.Parse(Path(path).read_text(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as exc:
        raise ValueError(f"--model-config-file {path}: {exc}") from None
    out = []
    for c in cfg.model_config_list.config:
        policy = c.model_version_policy
        if policy.WhichOneof("policy_choice") not in (None, "latest"):
            raise ValueError(f"--model-config-file {path}: model {c.name!r}: only the 'latest' version policy is supported")
        out.append(ModelEntry(c.name, Path(c.base_path), policy.latest.num_versions or 1, dict(c.version_labels)))
    if not out:
        raise ValueError(f"--model-config-file {path}: no model in model_config_list")
    return out


# ----------------------------------------------------------------------------------------------------- metrics
class Metrics:
    """Prometheus metrics on a private registry (several servers may live in one test process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "jobctl_serving_requests", "gRPC requests by model, version, method and status code",
            ["model", "version", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "jobctl_serving_request_latency_seconds", "request latency (server side)",
            ["model", "version", "method", "status"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.batch_size = Histogram(
            "jobctl_serving_batch_size", "examples per model call (server-side batching)", ["model", "version"],
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.version_state = Gauge(
            "jobctl_serving_model_version_state", "ModelVersionStatus.State (30 = AVAILABLE)", ["model", "version"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "jobctl_serving_version_load_failures", "versions that failed to load or warm up", ["model"],
            registry=self.registry,
        )

        self._children: dict = {}
        self._batch_children: dict = {}

    def observe(self, model: str, version: str, method: str, status: str, seconds: float) -> None:
        """One request: cached label children (labels() costs a lock and a tuple build on every call)."""
        key = (model, version, method, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children.setdefault(key, (self.requests.labels(*key), self.latency.labels(*key)))
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_batch(self, model: str, version: str, n: int) -> None:
        """One model call of `n` examples; cached like observe()."""
        key = (model, version)
        child = self._batch_children.get(key)
        if child is None:
            child = self._batch_children.setdefault(key, self.batch_size.labels(*key))
        child.observe(n)

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


# ----------------------------------------------------------------------------------------------------- batching
class _Task:
    """One request in the batch queue. A synchronous caller waits on `done`; an asyncio caller (the gRPC server)
    awaits `future`, which the batch thread resolves through its loop once per batch, not once per request."""

    __slots__ = ("inputs", "rows", "done", "result", "error", "future", "loop")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int, future=None, loop=None):
        self.inputs, self.rows = inputs, rows
        self.done = threading.Event() if future is None else None
        self.result: Optional[dict[str, np.ndarray]] = None
        self.error: Optional[BaseException] = None
        self.future, self.loop = future, loop


def _deliver(tasks: list) -> None:
    """On the event loop: hand each request its rows (a request whose RPC was cancelled is skipped)."""
    for t in tasks:
        if not t.future.done():
            if t.error is not None:
                t.future.set_exception(t.error)
            else:
                t.future.set_result(t.result)


class Batcher:
    """Merges concurrent requests into model calls of at most `max_batch_size` rows.

    A request larger than the batch size runs on its own (split into max-size chunks), as TF Serving does with
    large-batch splitting; requests are never reordered within a batch, outputs are sliced back by row offsets.
    """

    def __init__(self, run: Callable[[dict], dict], cfg: BatchingConfig, observe: Callable[[int], None] = lambda n: None):
        self._run, self.cfg, self._observe = run, cfg, observe
        self._queue: "queue.Queue[Optional[_Task]]" = queue.Queue(maxsize=max(1, cfg.max_enqueued_batches * cfg.max_batch_size))
        self._threads = [threading.Thread(target=self._loop, name=f"batch-{i}", daemon=True) for i in range(cfg.num_batch_threads)]
        self._stopped = False
        self._lock = threading.Lock()
        for t in self._threads:
            t.start()

    def _enqueue(self, task: _Task) -> bool:
        """False when the batcher is stopped (the caller then runs the request itself)."""
        with self._lock:  # never behind the stop sentinel: nobody would take it
            if self._stopped:
                return False
            try:
                self._queue.put_nowait(task)
            except queue.Full:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full") from None
            return True

    async def submit_async(self, inputs: dict[str, np.ndarray], rows: int, executor) -> dict[str, np.ndarray]:
        """For the asyncio server: no thread blocks per request; the client's deadline cancels the await."""
        loop = asyncio.get_running_loop()
        if rows > self.cfg.max_batch_size:
            return await loop.run_in_executor(executor, self._run_chunked, inputs, rows)
        task = _Task(inputs, rows, loop.create_future(), loop)
        if not self._enqueue(task):  # the version was retired while this request was in flight: run it unbatched
            self._observe(rows)
            return await loop.run_in_executor(executor, self._run, inputs)
        return await task.future

    def submit(self, inputs: dict[str, np.ndarray], rows: int, timeout: Optional[float]) -> dict[str, np.ndarray]:
        if rows > self.cfg.max_batch_size:
            return self._run_chunked(inputs, rows)
        task = _Task(inputs, rows)
        stopped = not self._enqueue(task)
        if stopped:  # the version was retired while this request was in flight: answer it anyway, unbatched
            self._observe(rows)
            return self._run(inputs)
        if not task.done.wait(timeout if timeout is not None else None):
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the batch queue")
        if task.error is not None:
            raise task.error
        return task.result  # type: ignore[return-value]

    def _run_chunked(self, inputs, rows):
        step = self.cfg.max_batch_size
        parts = [self._run({k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, rows, step)]
        for i in range(0, rows, step):
            self._observe(min(step, rows - i))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _loop(self):
        carry: Optional[_Task] = None
        timeout = self.cfg.batch_timeout_micros / 1e6
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is None:
                self._queue.put(None)  # let the other threads see it too
                return
            tasks, rows = [first], first.rows
            # Sleep through the window instead of waking on every arrival: under the GIL each wake-up costs
            # about as much as the model call batching saves. Checked a few times so a full batch leaves early.
            deadline = time.monotonic() + timeout
            while rows + self._queue.qsize() < self.cfg.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(remaining, timeout / 4))
            while rows < self.cfg.max_batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                if rows + nxt.rows > self.cfg.max_batch_size:
                    carry = nxt
                    break
                tasks.append(nxt)
                rows += nxt.rows
            self._execute(tasks, rows)

    def _execute(self, tasks: list[_Task], rows: int):
        try:
            if len(tasks) == 1:
                outputs = self._run(tasks[0].inputs)
                tasks[0].result = outputs
            else:
                merged = {k: np.concatenate([t.inputs[k] for t in tasks]) for k in tasks[0].inputs}
                outputs = self._run(merged)
                offset = 0
                for t in tasks:
                    t.result = {k: v[offset : offset + t.rows] for k, v in outputs.items()}
                    offset += t.rows
            self._observe(rows)
        except BaseException as exc:  # delivered to every waiting request, the thread lives on
            for t in tasks:
                t.error = exc
        by_loop: dict = {}
        for t in tasks:
            if t.done is not None:
                t.done.set()
            else:
                by_loop.setdefault(t.loop, []).append(t)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, group)
            except RuntimeError:  # the loop is closed: the server is gone, nobody awaits these
                pass

    def stop(self):
        """Requests already queued are still answered (they are ahead of the sentinel); later ones run unbatched."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._queue.put(None)


# ----------------------------------------------------------------------------------------------------- versions
@dataclass(frozen=True)
class Served:
    """What one request uses, taken under the manager's lock: a retirement in the meantime cannot pull the model
    or its batchers from under it (the references keep them alive until the request is answered)."""

    number: int
    model: LoadedModel
    batchers: dict


@dataclass
class Version:
    number: int
    path: Path
    state: int = START
    error: Optional[str] = None
    model: Optional[LoadedModel] = None
    batchers: dict = field(default_factory=dict)


def _fingerprint(path: Path) -> tuple:
    entries = []
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.stat(os.path.join(root, f))
            except OSError:
                continue
            entries.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))


class ModelManager:
    """Loads and retires the versions of one model as they appear under its base path."""

    def __init__(self, name: str, base_path: Path, cfg: ServerConfig, metrics: Metrics, on_change: Callable[[], None] = lambda: None,
                 num_versions: Optional[int] = None, labels: Optional[dict[str, int]] = None):
        self.name, self.base_path, self.cfg, self.metrics = name, Path(base_path), cfg, metrics
        self.num_versions = num_versions or cfg.num_versions
        self.labels = dict(cfg.labels if labels is None else labels)
        self._on_change = on_change
        self._lock = threading.RLock()
        self.versions: dict[int, Version] = {}  # every version seen, including failed and retired ones
        self._pending: dict[int, tuple] = {}  # version -> fingerprint seen on the previous poll
        self._failed_fp: dict[int, tuple] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._first_poll = True

    # -- lifecycle
    def start(self):
        self.poll_once()
        self._thread = threading.Thread(target=self._watch, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            for v in self.versions.values():
                for b in v.batchers.values():
                    b.stop()

    def _watch(self):
        while not self._stop.wait(self.cfg.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # the watcher must outlive a flaky file system
                log.exception("model %s: polling %s failed", self.name, self.base_path)

    # -- the policy: latest `num_versions`, each swapped in only when AVAILABLE
    def poll_once(self):
        """Walk versions newest first until `num_versions` servable candidates are found. A version still being
        written (no saved_model.pb, or files changing) or one that failed is passed over, so a bad newest
        version never blocks a good older one that is newer than what is served."""
        on_disk = savedmodel.integer_versions(self.base_path)
        picked = 0
        for number in reversed(on_disk):
            if picked >= self.num_versions:
                break
            v = self.versions.get(number)
            if v is not None and v.state in (AVAILABLE, LOADING):
                picked += 1
                continue
            path = self.base_path / str(number)
            if not (path / "saved_model.pb").is_file():
                if number not in self._pending:
                    log.info("model %s: version %d has no saved_model.pb yet; waiting", self.name, number)
                    self._pending[number] = ()
                continue
            fp = _fingerprint(path)
            if self._failed_fp.get(number) == fp:
                continue  # failed before and unchanged since: do not retry in a loop
            picked += 1
            if not self._first_poll and self._pending.get(number) != fp:
                self._pending[number] = fp  # new or changed since the last poll: wait for it to settle
                continue
            self._pending.pop(number, None)
            self._load(number, path, fp)
        self._first_poll = False
        self._retire(on_disk)

    def _load(self, number: int, path: Path, fp: tuple):
        v = Version(number, path, LOADING)
        with self._lock:
            self.versions[number] = v
        self._set_state(v, LOADING)
        log.info("model %s: loading version %d from %s", self.name, number, path)
        t0 = time.monotonic()
        try:
            v.model = savedmodel.load(path)
            if self.cfg.batching.enabled:
                for key, sig in v.model.signatures.items():
                    if _batchable(sig):
                        v.batchers[key] = Batcher(
                            _runner(sig), self.cfg.batching,
                            lambda n, _v=str(number): self.metrics.observe_batch(self.name, _v, n),
                        )
            if self.cfg.warmup:
                _warmup(v.model)
        except Exception as exc:
            for b in v.batchers.values():
                b.stop()
            v.model, v.batchers = None, {}
            v.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, savedmodel.ModelError) else str(exc)
            self._failed_fp[number] = fp
            self.metrics.load_failures.labels(self.name).inc()
            self._set_state(v, END)
            log.error("model %s: version %d not loaded, the current version keeps serving: %s", self.name, number, v.error)
            return
        self._set_state(v, AVAILABLE)
        log.info("model %s: version %d AVAILABLE (%.1fs)", self.name, number, time.monotonic() - t0)

    def _retire(self, on_disk: list[int]):
        """Keep the newest `num_versions` AVAILABLE versions; unload older ones and those removed from disk."""
        with self._lock:
            available = sorted(n for n, v in self.versions.items() if v.state == AVAILABLE)
            keep = set(available[-self.num_versions :])
            retire = [n for n in available if n not in keep or n not in on_disk]
            for n in retire:
                v = self.versions[n]
                self._set_state(v, UNLOADING)
                for b in v.batchers.values():
                    b.stop()
                v.model, v.batchers = None, {}  # in-flight requests hold their own reference
                self._set_state(v, END)
                log.info("model %s: version %d unloaded", self.name, n)

    def _set_state(self, v: Version, state: int):
        v.state = state
        self.metrics.version_state.labels(self.name, str(v.number)).set(state)
        self._on_change()

    # -- lookups
    def available(self) -> list[int]:
        with self._lock:
            return sorted(n for n, v in self.versions.items() if v.state == AVAILABLE)

    def resolve(self, version: Optional[int], label: Optional[str]) -> Served:
        with self._lock:
            if label:
                if label not in self.labels:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            if version is None:
                avail = self.available()
                if not avail:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({self.name})")
                v = self.versions[avail[-1]]
                return Served(v.number, v.model, dict(v.batchers))
            v = self.versions.get(version)
            if v is None or v.state != AVAILABLE or v.model is None:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({self.name}, {version})")
            return Served(v.number, v.model, dict(v.batchers))


def _batchable(sig: Signature) -> bool:
    """Batching slices outputs by rows: every input and output must have a leading batch dimension."""
    if not sig.inputs:
        return False
    infos = list(sig.inputs.values()) + list(sig.outputs.values())
    return all(i.shape is not None and len(i.shape) >= 1 and i.shape[0] == -1 for i in infos)


def _runner(sig: Signature) -> Callable[[dict], dict]:
    def run(inputs: dict) -> dict:
        return savedmodel.call(sig, inputs)

    return run


def _warmup(model: LoadedModel):
    """Run the model before it takes traffic: TF Serving's warmup file when present, else one zero image.

    A version that loads but cannot run (wrong ops, bad variables) fails here, not on a user's request.
    """
    sig = model.signatures.get(DEFAULT_SIGNATURE)
    warmup_file = model.path / "assets.extra" / "tf_serving_warmup_requests"
    if warmup_file.is_file():
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        for i, record in enumerate(tf.data.TFRecordDataset(str(warmup_file)).take(1000)):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            req = entry.predict_log.request
            s = model.signatures.get(req.model_spec.signature_name or DEFAULT_SIGNATURE)
            if s is None:
                raise savedmodel.ModelError(f"warmup record {i}: unknown signature {req.model_spec.signature_name!r}")
            savedmodel.call(s, {k: to_ndarray(t, k) for k, t in req.inputs.items()})
        return
    if sig is None:
        return
    feeds = {}
    for name, info in sig.inputs.items():
        if info.shape is None or any(d < 0 for d in info.shape[1:]):
            return  # cannot invent an input of unknown shape
        feeds[name] = np.zeros([1, *info.shape[1:]], dtype=info.numpy_dtype)
    savedmodel.call(sig, feeds)


# ----------------------------------------------------------------------------------------------------- validation
def validate_inputs(sig: Signature, raw: dict, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """Decode and check request tensors against the signature. Returns (arrays, batch rows)."""
    sent, expected = set(raw), set(sig.inputs)
    if sent != expected:
        extra, missing = sorted(sent - expected), sorted(expected - sent)
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sorted(sent))}}}) != "
            f"len({{{','.join(sorted(expected))}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}.",
        )
    arrays, rows = {}, None
    for index, name in enumerate(sorted(sig.inputs)):
        info, proto = sig.inputs[name], raw[name]
        if proto.dtype != info.dtype:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[{index}] to be {dtype_name(info.dtype)} but {dtype_name(proto.dtype)} is provided "
                f"(input {name!r})",
            )
        try:
            arr = to_ndarray(proto, name)
        except TensorError as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        want = info.shape
        mismatch = shape_mismatch(name, want, arr.shape)
        if mismatch:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, mismatch)
        if arr.ndim >= 1 and want is not None and len(want) >= 1 and want[0] < 0:
            n = int(arr.shape[0])
            if rows is not None and n != rows:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r}: batch size {n} differs from {rows} of the other inputs",
                )
            rows = n
        arrays[name] = arr
    rows = rows or 0
    if sig.inputs and rows == 0 and all(i.shape and i.shape[0] < 0 for i in sig.inputs.values()):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "empty batch: the request holds 0 examples; send at least one")
    if rows > max_rows:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"batch of {rows} examples is above this server's limit of {max_rows} (--max-request-batch-size); "
            "split the request",
        )
    return arrays, rows


# ----------------------------------------------------------------------------------------------------- the server
class ModelServer:
    """Owns the gRPC server, the model managers, health and metrics. `start()` returns once the port is bound."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.metrics = Metrics()
        self.managers: dict[str, ModelManager] = {}
        self._grpc = None  # grpc.Server, or grpc.aio.Server living on _event_loop()
        self.asyncio = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.executor: Optional[futures.ThreadPoolExecutor] = None  # asyncio transport: unbatched model calls
        self._pool: Optional[futures.ThreadPoolExecutor] = None  # synchronous RPC handlers
        self._health = None
        self._metrics_http = None
        self.port: Optional[int] = None

    # -- health: SERVING only while every model has an AVAILABLE version (what readiness should mean)
    def _update_health(self):
        if self._health is None:
            return
        from grpc_health.v1 import health_pb2

        ready = bool(self.managers) and all(m.available() for m in self.managers.values())
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", PREDICTION_SERVICE, MODEL_SERVICE, "PredictionService", "ModelService", *self.managers):
            self._health.set(service, status)

    def start(self) -> "ModelServer":
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        from grpc_reflection.v1alpha import reflection
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        _configure_tf_threads(self.cfg.intra_op_threads, self.cfg.inter_op_threads)
        entries = [ModelEntry(self.cfg.model_name, Path(self.cfg.base_path), self.cfg.num_versions, self.cfg.labels)] if self.cfg.model_name else []
        entries += list(self.cfg.extra_models)
        if not entries:
            raise ValueError("no model to serve: give a model name and base path, or a model config file")
        if len({e.name for e in entries}) != len(entries):
            raise ValueError(f"model names must be unique, received {[e.name for e in entries]}")
        for e in entries:
            if not Path(e.base_path).is_dir():
                raise FileNotFoundError(f"model {e.name}: base path {e.base_path} does not exist; expected a directory of integer versions")
        self._health = health.HealthServicer(experimental_non_blocking=True)
        for e in entries:
            manager = ModelManager(e.name, Path(e.base_path), self.cfg, self.metrics, self._update_health, e.num_versions, e.labels)
            self.managers[e.name] = manager
            manager.start()  # the first poll loads what is there before the port opens (as TF Serving does)
            if not manager.available():
                log.warning("model %s: no loadable version under %s yet; NOT_FOUND until one appears", e.name, e.base_path)
        self._update_health()

        limit = self.cfg.max_message_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                   ("grpc.so_reuseport", 0)]
        credentials = None
        if self.cfg.tls_cert or self.cfg.tls_key:
            if not (self.cfg.tls_cert and self.cfg.tls_key):
                raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
            credentials = grpc.ssl_server_credentials([(Path(self.cfg.tls_key).read_bytes(), Path(self.cfg.tls_cert).read_bytes())])
        address = f"{self.cfg.host}:{self.cfg.port}"
        self._pool = futures.ThreadPoolExecutor(max_workers=self.cfg.max_workers, thread_name_prefix="grpc")

        def populate(server, predict_servicer) -> int:
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predict_servicer, server)
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelServicer(self), server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            names = (PREDICTION_SERVICE, MODEL_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
            try:
                port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
            except RuntimeError:  # grpc.aio raises where grpc.server returns 0
                port = 0
            if port == 0:
                raise OSError(f"cannot bind gRPC port {self.cfg.host}:{self.cfg.port} (in use?)")
            return port

        self.asyncio = self.cfg.batching.enabled if self.cfg.grpc_asyncio is None else self.cfg.grpc_asyncio
        if self.asyncio:
            self._loop = _event_loop()
            self.executor = futures.ThreadPoolExecutor(max_workers=self.cfg.max_workers, thread_name_prefix="model")

            async def build():
                server = grpc.aio.server(migration_thread_pool=self._pool, options=options)
                port = populate(server, _AsyncPredictionServicer(self))
                await server.start()
                return server, port

            self._grpc, self.port = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        else:
            server = grpc.server(self._pool, options=options)
            self.port = populate(server, _PredictionServicer(self))
            server.start()
            self._grpc = server
        self._update_health()
        if self.cfg.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_http, _ = start_http_server(self.cfg.metrics_port, registry=self.metrics.registry)
        log.info("serving %s on port %d", ", ".join(f"{m.name} ({m.base_path})" for m in self.managers.values()), self.port)
        return self

    def stop(self, grace: float = 10.0):
        """Graceful: health goes NOT_SERVING, new RPCs are refused, in-flight ones get `grace` seconds."""
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            if self.asyncio:
                asyncio.run_coroutine_threadsafe(self._grpc.stop(grace), self._loop).result()
            else:
                self._grpc.stop(grace).wait()
        for pool in (self.executor, self._pool):
            if pool is not None:
                pool.shutdown(wait=False)
        for m in self.managers.values():
            m.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http = None

    def wait(self):
        if self._grpc is None:
            return
        if self.asyncio:
            asyncio.run_coroutine_threadsafe(self._grpc.wait_for_termination(), self._loop).result()
        else:
            self._grpc.wait_for_termination()

    # -- request plumbing shared by the servicers
    def manager(self, model_spec) -> ModelManager:
        if not model_spec.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        m = self.managers.get(model_spec.name)
        if m is None:
            which = f"Specific({model_spec.name}, {model_spec.version.value})" if model_spec.HasField("version") else f"Latest({model_spec.name})"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {which}")
        return m

    def servable(self, model_spec) -> tuple[ModelManager, Served]:
        m = self.manager(model_spec)
        version = model_spec.version.value if model_spec.HasField("version") else None
        label = model_spec.version_label if model_spec.WhichOneof("version_choice") == "version_label" else None
        return m, m.resolve(version, label)


_LOOP_LOCK = threading.Lock()
_LOOP: Optional[asyncio.AbstractEventLoop] = None


def _event_loop() -> asyncio.AbstractEventLoop:
    """One asyncio loop thread per process, shared by every server in it (tests and benchmarks run several)."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            _LOOP = asyncio.new_event_loop()
            threading.Thread(target=_LOOP.run_forever, name="grpc-aio", daemon=True).start()
        return _LOOP


def _configure_tf_threads(intra: int, inter: int) -> None:
    if not (intra or inter):
        return
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # TensorFlow already initialized in this process (tests, notebooks)
        log.warning("cannot set TensorFlow thread pools (intra=%d, inter=%d): %s", intra, inter, exc)


def _signature(v: Served, name: str) -> Signature:
    key = name or DEFAULT_SIGNATURE
    model = v.model
    if model is None or key not in model.signatures:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
    return model.signatures[key]


class _Instrumented:
    """Status, latency and counting for every RPC, mapped to gRPC codes; unexpected errors become INTERNAL."""

    def __init__(self, server: ModelServer):
        self.server = server

    def _handle(self, method: str, request, context, body):
        t0 = time.perf_counter()
        model = getattr(getattr(request, "model_spec", None), "name", "") or "none"
        info = {"version": "none"}
        code = grpc.StatusCode.OK
        try:
            return body(request, context, info)
        except ServingError as exc:
            code = exc.code
            context.abort(exc.code, exc.message)
        except Exception as exc:  # a kernel error or a bug: report it, keep serving
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            status = code.name
            if model not in self.server.managers:
                model = "unknown"  # bounded label cardinality: arbitrary client names are not labels
            self.server.metrics.observe(model, info["version"], method, status, time.perf_counter() - t0)

    async def _handle_async(self, method: str, request, context, body):
        """_handle for coroutine handlers. The metric is recorded before abort(): grpc.aio sends the status
        from inside abort(), and a client that saw its error must find it counted."""
        t0 = time.perf_counter()
        model = getattr(getattr(request, "model_spec", None), "name", "") or "none"
        info = {"version": "none"}
        code, error = grpc.StatusCode.OK, ""
        try:
            return await body(request, context, info)
        except ServingError as exc:
            code, error = exc.code, exc.message
        except asyncio.CancelledError:  # the client went away or its deadline passed; gRPC already answered
            remaining = context.time_remaining()
            code = grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # a kernel error or a bug: report it, keep serving
            code, error = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
            log.exception("%s failed", method)
        finally:
            if model not in self.server.managers:
                model = "unknown"  # bounded label cardinality: arbitrary client names are not labels
            self.server.metrics.observe(model, info["version"], method, code.name, time.perf_counter() - t0)
        await context.abort(code, error)


class _PredictionServicer(_Instrumented):
    def Predict(self, request, context):
        return self._handle("Predict", request, context, self._predict)

    def GetModelMetadata(self, request, context):
        return self._handle("GetModelMetadata", request, context, self._metadata)

    def Classify(self, request, context):
        return self._handle("Classify", request, context, self._classify)

    def Regress(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not supported: jobctl models are classifiers")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported; use Predict")

    def _predict(self, request, context, info):
        m, v, sig, filters, arrays, rows, batcher = self._predict_inputs(request, info)
        if batcher is not None:
            outputs = batcher.submit(arrays, rows, context.time_remaining())
        else:
            outputs = savedmodel.call(sig, arrays)
            m.metrics.observe_batch(m.name, str(v.number), max(rows, 1))
        return _predict_response(m, v, sig, filters, outputs)

    def _predict_inputs(self, request, info):
        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        sig = _signature(v, request.model_spec.signature_name)
        filters = list(request.output_filter)
        for alias in filters:
            if alias not in sig.outputs:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(sig.outputs))}}}.",
                )
        arrays, rows = validate_inputs(sig, request.inputs, self.server.cfg.max_request_batch_size)
        return m, v, sig, filters, arrays, rows, v.batchers.get(sig.key)

    def _metadata(self, request, context, info):
        from google.protobuf import wrappers_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
        supported = ("signature_def", "jobctl") if self.server.cfg.jobctl_metadata else ("signature_def",)
        for f in fields:
            if f not in supported:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {f} is not supported")
        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        model = v.model
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = m.name
        response.model_spec.version.value = v.number
        if "signature_def" in fields:
            defs = get_model_metadata_pb2.SignatureDefMap()
            for key, sig_def in model.signature_defs.items():
                if not key.startswith("__"):
                    defs.signature_def[key].CopyFrom(sig_def)
            response.metadata["signature_def"].Pack(defs)
        if "jobctl" in fields:
            # jobctl's own field (jobctl.json as JSON): class names for clients. Stock TF Serving rejects it
            # with INVALID_ARGUMENT; the client then falls back (serving/client.py).
            import json

            response.metadata["jobctl"].Pack(wrappers_pb2.StringValue(value=json.dumps(model.metadata)))
        return response

    def _classify(self, request, context, info):
        """Classify over tf.Example: feature `images` holds an image's raw pixels (bytes, int64 or float list)."""
        from tensorflow_serving.apis import classification_pb2

        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        sig = _signature(v, request.model_spec.signature_name)
        if list(sig.inputs) != ["images"] or "probabilities" not in sig.outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Classify needs a signature with one input 'images' and an output 'probabilities'; "
                f"{sig.key!r} has inputs {sorted(sig.inputs)} and outputs {sorted(sig.outputs)}",
            )
        kind = request.input.WhichOneof("kind")
        if kind != "example_list":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Classify expects input.example_list, received {kind}")
        ti = sig.inputs["images"]
        shape, np_dtype = ti.shape[1:], ti.numpy_dtype
        size = int(np.prod(shape))
        images = []
        for i, ex in enumerate(request.input.example_list.examples):
            feat = ex.features.feature.get("images")
            if feat is None:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"example {i}: missing feature 'images'")
            which = feat.WhichOneof("kind")
            if which == "bytes_list" and len(feat.bytes_list.value) == 1:
                flat = np.frombuffer(feat.bytes_list.value[0], dtype=np.uint8)
            elif which == "int64_list":
                flat = np.asarray(feat.int64_list.value)
            elif which == "float_list":
                flat = np.asarray(feat.float_list.value)
            else:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"example {i}: feature 'images' is empty or has several byte strings")
            if flat.size != size:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"example {i}: feature 'images' has {flat.size} values; shape {format_shape(shape)} needs {size}",
                )
            images.append(flat.astype(np_dtype).reshape(shape))
        if not images:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "empty batch: the request holds 0 examples; send at least one")
        batch = np.stack(images)
        if len(batch) > self.server.cfg.max_request_batch_size:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"batch of {len(batch)} examples is above this server's limit")
        batcher = v.batchers.get(sig.key)
        outputs = batcher.submit({"images": batch}, len(batch), context.time_remaining()) if batcher else savedmodel.call(sig, {"images": batch})
        names = v.model.class_names or [str(i) for i in range(outputs["probabilities"].shape[-1])]
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name = m.name
        response.model_spec.version.value = v.number
        response.model_spec.signature_name = sig.key
        for row in outputs["probabilities"]:
            c = response.result.classifications.add()
            for name, score in zip(names, row):
                c.classes.add(label=name, score=float(score))
        return response


class _AsyncPredictionServicer(_PredictionServicer):
    """Predict as a coroutine, for the asyncio transport: a request waits for its batch on the event loop instead
    of holding a thread, so the GIL is not passed among dozens of threads per request and the batch thread wakes
    the loop once per batch. The other methods are rare and stay synchronous (gRPC's migration thread pool)."""

    async def Predict(self, request, context):
        return await self._handle_async("Predict", request, context, self._predict_async)

    async def _predict_async(self, request, context, info):
        m, v, sig, filters, arrays, rows, batcher = self._predict_inputs(request, info)
        if batcher is not None:
            outputs = await batcher.submit_async(arrays, rows, self.server.executor)
        else:
            outputs = await asyncio.get_running_loop().run_in_executor(self.server.executor, savedmodel.call, sig, arrays)
            m.metrics.observe_batch(m.name, str(v.number), max(rows, 1))
        return _predict_response(m, v, sig, filters, outputs)


def _predict_response(m: ModelManager, v: Served, sig: Signature, filters: list, outputs: dict):
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = m.name
    response.model_spec.version.value = v.number
    response.model_spec.signature_name = sig.key
    for alias, value in outputs.items():
        if filters and alias not in filters:
            continue
        if value.dtype == object:
            from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

            response.outputs[alias].CopyFrom(tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]),
                string_val=[s if isinstance(s, bytes) else str(s).encode() for s in value.reshape(-1)],
            ))
        else:
            write_ndarray(response.outputs[alias], value)
    return response


class _ModelServicer(_Instrumented):
    def GetModelStatus(self, request, context):
        return self._handle("GetModelStatus", request, context, self._status)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "HandleReloadConfigRequest is not supported; versions are picked up from the base path")

    def _status(self, request, context, info):
        from tensorflow_serving.apis import get_model_status_pb2

        m = self.server.manager(request.model_spec)
        wanted = request.model_spec.version.value if request.model_spec.HasField("version") else None
        with m._lock:
            versions = dict(m.versions)
        if wanted is not None:
            if wanted not in versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {wanted} of model {m.name}")
            versions = {wanted: versions[wanted]}
        if not versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {m.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(versions, reverse=True):
            v = versions[number]
            s = response.model_version_status.add(version=number, state=v.state)
            if v.error:
                s.status.error_code = 2  # UNKNOWN: the message says why the version failed to load
                s.status.error_message = v.error
        return response


def serve_forever(cfg: ServerConfig, grace: float = 10.0) -> int:
    """Run until SIGTERM/SIGINT; in-flight requests get `grace` seconds. Returns the process exit code."""
    import signal

    server = ModelServer(cfg).start()
    done = threading.Event()

    def _on_signal(signum, _frame):
        log.info("signal %d: draining (grace %.0fs)", signum, grace)
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not done.wait(0.5):
        pass
    server.stop(grace)
    log.info("stopped")
    return 0
