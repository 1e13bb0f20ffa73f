"""Choosing the `tf.distribute` strategy from the spec and the environment, and what distribution asks of a run.

- One device: the default strategy. Several local devices (GPUs; or the CPU split into N logical devices with
  `--virtual-devices N`): `MirroredStrategy`. Both train Keras 3 models with `model.fit`.
- `TF_CONFIG` in the environment, or built by `jobs.tf_config.tf_config_from_env` from the Indexed Job's
  `JOB_COMPLETION_INDEX`, `JOBCTL_WORKERS`, `JOBCTL_JOB_NAME`, `JOBCTL_SERVICE`: `MultiWorkerMirroredStrategy`.
  Keras 3.15's `model.fit` fails under it (keras-team/keras#20585), so multi-worker runs train the same model built
  with tf-keras 2.21 (`legacy_models()`), whose `fit`, `BackupAndRestore` and file writers are multi-worker aware;
  the weights are copied into the Keras 3 model (`copy_weights`) for the checkpoint file and the export, so every
  artifact is the same whichever engine trained it. See docs/distributed.md.

Must be called before anything else touches TensorFlow devices: virtual devices and TF_CONFIG are read once.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Mapping, Optional

from jobs import exit_codes
from jobs.errors import BadInputError, PeerUnavailableError, Preempted

log = logging.getLogger(__name__)

# How long a SIGTERM'd job may take to unwind (write metrics.json) before it exits 75 regardless; the Job's
# terminationGracePeriodSeconds (k8s/manifests.py: 120 s) must be longer.
SIGTERM_GRACE_ENV = "JOBCTL_SIGTERM_GRACE_SECONDS"
DEFAULT_SIGTERM_GRACE = 60.0


@dataclass
class StrategyInfo:
    strategy: object  # tf.distribute.Strategy
    kind: str  # "default" | "mirrored" | "multi_worker"
    replicas: int
    workers: int = 1
    task_index: int = 0
    # The Keras that trains: `keras` (3.x) in one process, `tf_keras` under MultiWorkerMirroredStrategy.
    keras: Any = None
    models: Any = None  # a module with `build_model` written against `keras`
    devices: list[str] = field(default_factory=list)

    @property
    def is_chief(self) -> bool:
        return self.task_index == 0

    @property
    def legacy_keras(self) -> bool:
        return self.kind == "multi_worker"


# ------------------------------------------------------------------------------------------------ TF_CONFIG
def cluster_config(env: Optional[Mapping[str, str]] = None) -> Optional[dict]:
    """TF_CONFIG for this process (explicit, or built from the Indexed Job's variables), or None for one process.

    Raises `jobs.tf_config.TFConfigError` (a ValueError: exit code 2, never retried) when it is malformed.
    """
    from jobs.tf_config import tf_config_from_env

    config = tf_config_from_env(os.environ if env is None else env)
    if config is None:
        return None
    from jobs.tf_config import TFConfigError

    cluster, task = config["cluster"], config["task"]
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown or task["type"] not in ("chief", "worker"):
        raise TFConfigError(
            f"TF_CONFIG: jobctl runs 'chief' and 'worker' tasks only. Received: cluster jobs {sorted(cluster)}, task "
            f"type {task['type']!r}; expected {{'worker': [...]}} (worker 0 is the chief) or a 'chief' plus workers"
        )
    for job, members in cluster.items():
        bad = [m for m in members if not isinstance(m, str) or ":" not in m or not m.rsplit(":", 1)[1].isdigit()]
        if bad:
            raise TFConfigError(f"TF_CONFIG: cluster.{job} expects 'host:port' strings, received {bad!r}")
    return config


def task_position(config: Optional[dict]) -> tuple[int, int]:
    """(number of workers, this task's position; 0 is the chief) of a validated TF_CONFIG, (1, 0) without one."""
    if not config:
        return 1, 0
    cluster, task = config["cluster"], config["task"]
    chiefs = len(cluster.get("chief", []))
    workers = chiefs + len(cluster.get("worker", []))
    position = task["index"] if task["type"] == "chief" else chiefs + task["index"]
    return workers, position


def is_chief_process(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether this process may write the run directory (used on paths that run before the strategy exists)."""
    try:
        return task_position(cluster_config(env))[1] == 0
    except ValueError:
        return True  # a malformed config fails before any worker writes anything; let the message be recorded


# ------------------------------------------------------------------------------------------------- devices
def configure_virtual_devices(n: int) -> None:
    """Split the CPU into `n` logical devices: MirroredStrategy on them behaves as on `n` GPUs of one node."""
    import tensorflow as tf

    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == n:
        return  # already split (a second run in the same process)
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        raise BadInputError(
            f"virtual_devices: the CPU can only be split before TensorFlow initializes its devices. Received: "
            f"virtual_devices={n} in a process that already uses TensorFlow; expected a fresh process "
            "(`python -m jobs.train --virtual-devices N` or `jobctl train --virtual-devices N`)"
        ) from exc


# ------------------------------------------------------------------------------------------------ strategy
def select_strategy(
    kind: str = "auto",
    virtual_devices: int = 0,
    *,
    worker_timeout: float = 300.0,
    env: Optional[Mapping[str, str]] = None,
) -> StrategyInfo:
    """The strategy for `distribution.strategy` (`kind`) in this environment, ready to train."""
    config = cluster_config(env)
    workers, position = task_position(config)
    if kind == "auto":
        if config is not None and workers > 1:
            kind = "multi_worker"
    if kind == "multi_worker":
        if config is None:
            raise BadInputError(
                "distribution.strategy: 'multi_worker' needs a cluster. Received: no TF_CONFIG and no JOBCTL_WORKERS "
                "in the environment; expected TF_CONFIG={'cluster': {'worker': [...]}, 'task': {...}} (set by the "
                "Kubernetes manifests) or strategy 'auto'"
            )
        if virtual_devices > 1:
            raise BadInputError(
                f"virtual_devices: not supported with several workers. Received: virtual_devices={virtual_devices} "
                "and a multi-worker TF_CONFIG; expected 0 (each worker trains on its own devices)"
            )
        return _multi_worker(config, workers, position, worker_timeout)

    import keras
    import tensorflow as tf

    from jobs import models

    if virtual_devices > 1:
        configure_virtual_devices(virtual_devices)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "auto":
        kind = "mirrored" if (len(gpus) > 1 or (not gpus and len(cpus) > 1)) else "default"
    if kind == "mirrored":
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus]
        strategy = tf.distribute.MirroredStrategy(devices)
        return StrategyInfo(strategy, "mirrored", strategy.num_replicas_in_sync, keras=keras, models=models, devices=devices)
    return StrategyInfo(tf.distribute.get_strategy(), "default", 1, keras=keras, models=models)


def distribute_input(info: StrategyInfo, dataset):
    """The dataset `fit` should get: on CPU replicas, already distributed without the strategy's prefetch to device.

    MirroredStrategy copies each batch to its replica's device on a background iterator, which overlaps the
    host-to-GPU copy with compute on GPUs; on logical CPU devices it is a host-to-host copy for nothing
    (measured side by side: MirroredStrategy on one CPU device went from 0.85-0.87x to 0.89-0.93x of no strategy
    without it). GPU replicas, the default strategy and multi-worker runs get the dataset unchanged.
    """
    if info.kind != "mirrored" or not info.devices or any("GPU" in d.upper() for d in info.devices):
        return dataset
    import tensorflow as tf

    return info.strategy.experimental_distribute_dataset(
        dataset, tf.distribute.InputOptions(experimental_fetch_to_device=False))


def _multi_worker(config: dict, workers: int, position: int, timeout: float) -> StrategyInfo:
    # tf.keras resolves to tf-keras only if this is set before TensorFlow is imported; jobs code uses the module
    # returned here (never tf.keras), so a process that imported TensorFlow earlier still trains correctly.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ["TF_CONFIG"] = json.dumps(config)  # TFConfigClusterResolver reads it from the environment
    hosts = [h for job in ("chief", "worker") for h in config["cluster"].get(job, [])]
    what = f"waiting for {workers} workers ({', '.join(hosts)}) as worker {position}"
    # TensorFlow waits for missing peers inside a C++ call that holds the GIL and has no timeout of its own, so
    # no Python code can bound it. Meet the peers first over plain TCP, with a deadline; a worker that never
    # comes up fails here, clearly. faulthandler (a C thread) is the backstop for a peer lost in between.
    wait_for_peers(hosts, position, timeout)
    import faulthandler

    import tensorflow as tf
    import tf_keras

    faulthandler.dump_traceback_later(timeout + 60, exit=True)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        barrier(strategy)  # strategy creation can return before every peer has joined
    finally:
        faulthandler.cancel_dump_traceback_later()
    log.info("%s: cluster ready, %d replicas", what, strategy.num_replicas_in_sync)
    return StrategyInfo(
        strategy, "multi_worker", strategy.num_replicas_in_sync, workers=workers, task_index=position,
        keras=tf_keras, models=legacy_models(),
    )


def wait_for_peers(hosts: list[str], position: int, timeout: float, poll: float = 0.25) -> None:
    """Meet every other worker over plain TCP on the TF_CONFIG ports, or raise PeerUnavailableError after `timeout`.

    Each worker listens on its own port and says hello (its index) to every other one. It closes its listener,
    so that TensorFlow can bind the port, only when it has reached every peer *and* every peer has reached it:
    nobody is left probing a port that is about to change hands.
    """
    import socket

    _, own_port = hosts[position].rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", int(own_port)))
    except OSError as exc:
        listener.close()
        raise PeerUnavailableError(f"TF_CONFIG: cannot listen on port {own_port} of {hosts[position]} ({exc})") from exc
    listener.listen(64)
    listener.settimeout(poll)
    others = {i for i in range(len(hosts)) if i != position}
    heard: set[int] = set()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:  # timeout, or closed
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    words = conn.recv(64).decode(errors="replace").split()
                except OSError:
                    continue
                if len(words) == 2 and words[0] == "jobctl-peer" and words[1].isdigit():
                    heard.add(int(words[1]))

    thread = threading.Thread(target=accept, name="jobctl-rendezvous", daemon=True)
    thread.start()
    started = time.monotonic()
    reached: set[int] = set()
    try:
        while reached != others or not others <= heard:
            for i in sorted(others - reached):
                name, port = hosts[i].rsplit(":", 1)
                try:
                    with socket.create_connection((name, int(port)), timeout=2.0) as conn:
                        conn.sendall(f"jobctl-peer {position}\n".encode())
                    reached.add(i)
                except OSError:  # not resolvable yet (a pod's DNS name appears with the pod) or not listening
                    pass
            if reached == others and others <= heard:
                break
            if time.monotonic() - started > timeout:
                missing = sorted((others - reached) | (others - heard))
                raise PeerUnavailableError(
                    f"waiting for {len(hosts)} workers as worker {position}: "
                    f"{', '.join(hosts[i] for i in missing)} never answered; not all of them joined within "
                    f"{timeout:g} s (distribution.worker_timeout_seconds)"
                )
            time.sleep(poll)
    finally:
        stop.set()
        thread.join()
        listener.close()


def barrier(strategy) -> None:
    """Block until every worker gets here (an all-reduce of one number)."""
    import tensorflow as tf

    value = strategy.experimental_distribute_values_from_function(lambda ctx: tf.constant(1.0))
    strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)


def is_peer_failure(exc: BaseException) -> bool:
    """TensorFlow's ways of saying that another worker is gone (collectives aborted, heartbeats missed)."""
    if isinstance(exc, PeerUnavailableError):
        return True
    tf = sys.modules.get("tensorflow")
    if tf is None:  # TensorFlow never loaded: the error cannot be one of its own
        return False
    if isinstance(exc, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)):
        return True
    text = str(exc)
    return isinstance(exc, tf.errors.OpError) and ("Collective ops is aborted" in text or "heartbeat" in text)


# ------------------------------------------------------------------------------------ tf-keras for the model
_LEGACY_MODELS: Optional[ModuleType] = None


def legacy_models() -> ModuleType:
    """`jobs.models` executed with `keras` bound to tf-keras: the same builder, the same layer names.

    jobs/models.py is written against `keras` (3.x); everything it uses exists in tf-keras 2.21 under the same
    names, so a second copy of the module whose `import keras` resolves to tf_keras builds the identical model.
    """
    global _LEGACY_MODELS
    if _LEGACY_MODELS is None:
        import tf_keras

        origin = importlib.util.find_spec("jobs.models").origin
        spec = importlib.util.spec_from_file_location("jobs._models_tf_keras", origin)
        module = importlib.util.module_from_spec(spec)
        saved = sys.modules.get("keras")
        sys.modules["keras"] = tf_keras
        try:
            spec.loader.exec_module(module)
        finally:
            if saved is None:
                sys.modules.pop("keras", None)
            else:
                sys.modules["keras"] = saved
        _LEGACY_MODELS = module
    return _LEGACY_MODELS


def copy_weights(source, target) -> None:
    """Copy every layer's weights from `source` to `target` by layer name (tf-keras <-> Keras 3 models).

    Layer by layer, because the two Kerases order a model's flat weight list differently (tf-keras puts every
    trainable weight first); within a layer both use creation order.
    """
    import numpy as np

    for layer in source.layers:
        try:
            other = target.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"copy_weights: layer {layer.name!r} of {source.name!r} is missing from {target.name!r}") from None
        if hasattr(layer, "layers") and hasattr(other, "layers"):  # nested model (keras.applications bases)
            copy_weights(layer, other)
            continue
        values = layer.get_weights()
        shapes = [tuple(v.shape) for v in other.get_weights()]
        if [tuple(np.shape(v)) for v in values] != shapes:
            raise ValueError(
                f"copy_weights: layer {layer.name!r} has weights {[np.shape(v) for v in values]} but the target "
                f"expects {shapes}"
            )
        if values:
            other.set_weights(values)
            if hasattr(other, "finalize_state"):
                other.finalize_state()  # Normalization computes what it applies from its weights here


# -------------------------------------------------------------------------------------------------- SIGTERM
_UNINTERRUPTIBLE = [0]  # depth of `uninterruptible()` blocks in the main thread
_PENDING = [False]  # a SIGTERM arrived inside one


@contextmanager
def uninterruptible():
    """A block SIGTERM does not cut in two (a backup's weights and its metadata): `Preempted` is raised as it ends."""
    _UNINTERRUPTIBLE[0] += 1
    try:
        yield
    finally:
        _UNINTERRUPTIBLE[0] -= 1
    if not _UNINTERRUPTIBLE[0] and _PENDING[0]:
        _PENDING[0] = False
        raise Preempted("SIGTERM received during a backup: stopping now that it is complete")


class PreemptionGuard:
    """SIGTERM -> `Preempted` raised in the main thread, and exit 75 after `grace` seconds whatever happens.

    The exception unwinds `fit` between two steps, so the run records what it has and the last finished epoch
    stays the one in the backup. The wakeup-fd thread is the backstop for a main thread stuck in TensorFlow's
    C++ runtime (a collective with a dead peer), where Python signal handlers cannot run.
    """

    def __init__(self, grace: Optional[float] = None, exit: Callable[[int], None] = os._exit):
        if grace is None:
            grace = float(os.environ.get(SIGTERM_GRACE_ENV, DEFAULT_SIGTERM_GRACE))
        self.grace = grace
        self._exit = exit
        self._previous = None
        self._previous_fd = None
        self._pipe: Optional[tuple[int, int]] = None
        self._raised = False

    def _handler(self, signum, frame):
        if self._raised:
            return
        self._raised = True
        if _UNINTERRUPTIBLE[0]:  # inside a backup write: raise when it is complete (see `uninterruptible`)
            _PENDING[0] = True
            return
        raise Preempted("SIGTERM received: stopping at once; the last backup is on disk")

    def _watch(self, read_fd: int) -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                data = b""
            if not data:
                os.close(read_fd)
                return
            if signal.SIGTERM in data:
                time.sleep(self.grace)
                print(f"error: SIGTERM: still running {self.grace:g} s later; exiting {exit_codes.PREEMPTED}",
                      file=sys.stderr, flush=True)
                self._exit(exit_codes.PREEMPTED)

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are delivered to the main thread only: nothing to install
        self._pipe = os.pipe()
        os.set_blocking(self._pipe[1], False)
        self._previous = signal.signal(signal.SIGTERM, self._handler)
        self._previous_fd = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(self._pipe[0],), name="jobctl-sigterm", daemon=True).start()
        return self

    def reinstall(self) -> None:
        if self._pipe is not None:
            signal.signal(signal.SIGTERM, self._handler)
            signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)

    def __exit__(self, *exc):
        if self._pipe is None:
            return False
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        os.close(self._pipe[1])  # the watcher reads EOF, closes its end and returns
        self._pipe = None
        return False
