"""Model versions (TF Serving's AspiredVersionsManager, file-system source and version policy, in one class):
poll the base path, load new integer versions on the side, warm them up, swap them in only once AVAILABLE, retire
old ones; resolve a request's version or label.

A version directory must look the same on two consecutive polls before it is loaded, so a copy in progress is not
read half-way. A version that fails to load or warm up is logged, reported by GetModelStatus, and never replaces a
working one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import grpc
import numpy as np

from jobs.contract import SIGNATURE_NAME, WARMUP_FILE
from serving import savedmodel
from serving.errors import ServingError
from serving.model_servers.batching import Batcher
from serving.model_servers.config import ServerConfig
from serving.model_servers.metrics import Metrics
from serving.savedmodel import LoadedModel, Signature
from serving.tensors import to_ndarray

log = logging.getLogger("jobctl.serving")

# ModelVersionStatus.State
UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END = 0, 10, 20, 30, 40, 50
STATE_NAMES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


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
                 num_versions: Optional[int] = None, labels: Optional[dict[str, int]] = None,
                 specific: Optional[tuple[int, ...]] = None):
        self.name, self.base_path, self.cfg, self.metrics = name, Path(base_path), cfg, metrics
        self.specific = frozenset(specific) if specific is not None else None  # TF Serving's specific policy
        self.num_versions = len(self.specific) if self.specific is not None else (num_versions or cfg.num_versions)
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
        dirs = savedmodel.version_dirs(self.base_path)
        on_disk = list(dirs)
        picked = 0
        for number in reversed(on_disk):
            if picked >= self.num_versions:
                break
            if self.specific is not None and number not in self.specific:
                continue
            v = self.versions.get(number)
            if v is not None and v.state in (AVAILABLE, LOADING):
                picked += 1
                continue
            path = dirs[number]
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

    def unload_all(self):
        """The model left the server's config: every loaded version goes (in-flight requests keep their own)."""
        self._retire([])

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
    sig = model.signatures.get(SIGNATURE_NAME)
    warmup_file = model.path / "assets.extra" / WARMUP_FILE
    if warmup_file.is_file():
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2

        for i, record in enumerate(tf.data.TFRecordDataset(str(warmup_file)).take(1000)):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            req = entry.predict_log.request
            s = model.signatures.get(req.model_spec.signature_name or SIGNATURE_NAME)
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

