"""A TensorFlow-Serving-compatible model server for development and tests (production runs `tensorflow/serving`):
startup, transports and lifecycle, as TF Serving's model_servers/server.cc. The services live beside it
(prediction_service, model_service), so do versions (model_manager), batching, validation and metrics.

It speaks TF Serving's own protos (`tensorflow_serving.apis`), so clients cannot tell the two apart. Two gRPC
transports, the faster one for each mode (measured, docs/serving.md): with batching, grpc.aio, where a request
awaits its batch on one event loop and the batch thread wakes the loop once per batch; without, grpc's thread pool,
where each request runs the model on its own thread (an asyncio hop only adds to that).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from pathlib import Path
from typing import Optional

import grpc

from jobs.errors import OperationFailedError
from serving.errors import ServingError
from serving.model_servers.config import ModelEntry, ServerConfig
from serving.model_servers.config_watcher import watcher_for
from serving.model_servers.metrics import Metrics
from serving.model_servers.model_manager import ModelManager, Served
from serving.model_servers.model_service import ModelServicer
from serving.model_servers.prediction_service import AsyncPredictionServicer, PredictionServicer

log = logging.getLogger("jobctl.serving")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
REST_WORKERS = 4  # unbatched REST handler threads (2 cores: 4 vs 32 gave +40% req/s at 32 clients)


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
        self._config_watcher = None
        self._rest_http = None
        self.port: Optional[int] = None
        self.rest_port: Optional[int] = None  # the REST API's port once started (None: REST off)

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
            raise OperationFailedError("no model to serve: give a model name and base path, or a model config file")
        if len({e.name for e in entries}) != len(entries):
            raise OperationFailedError(f"model names must be unique, received {[e.name for e in entries]}")
        for e in entries:
            if not Path(e.base_path).is_dir():
                raise OperationFailedError(f"model {e.name}: base path {e.base_path} does not exist; expected a directory of integer versions")
        self._health = health.HealthServicer(experimental_non_blocking=True)
        for e in entries:
            manager = ModelManager(e.name, Path(e.base_path), self.cfg, self.metrics, self._update_health, e.num_versions, e.labels,
                                   e.versions)
            self.managers[e.name] = manager
            manager.start()  # the first poll loads what is there before the port opens (as TF Serving does)
            if not manager.available():
                log.warning("model %s: no loadable version under %s yet; NOT_FOUND until one appears", e.name, e.base_path)
        self._update_health()

        limit = self.cfg.max_message_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                   ("grpc.so_reuseport", 0), *self.cfg.grpc_channel_arguments]
        credentials = None
        if self.cfg.tls_cert or self.cfg.tls_key:
            if not (self.cfg.tls_cert and self.cfg.tls_key):
                raise OperationFailedError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
            credentials = grpc.ssl_server_credentials([(Path(self.cfg.tls_key).read_bytes(), Path(self.cfg.tls_cert).read_bytes())])
        address = f"{self.cfg.host}:{self.cfg.port}"
        self._pool = futures.ThreadPoolExecutor(max_workers=self.cfg.max_workers, thread_name_prefix="grpc")

        def populate(server, predict_servicer) -> int:
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predict_servicer, server)
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self), server)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            names = (PREDICTION_SERVICE, MODEL_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
            try:
                port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
            except RuntimeError:  # grpc.aio raises where grpc.server returns 0
                port = 0
            if port == 0:
                raise OperationFailedError(f"cannot bind gRPC port {self.cfg.host}:{self.cfg.port} (in use?)")
            if self.cfg.grpc_socket_path:  # TF Serving's --grpc_socket_path: the same services on a Unix socket
                uds = f"unix:{self.cfg.grpc_socket_path}"
                try:
                    bound = server.add_secure_port(uds, credentials) if credentials else server.add_insecure_port(uds)
                except RuntimeError:
                    bound = 0
                if bound == 0:
                    raise OperationFailedError(f"cannot listen on Unix socket {self.cfg.grpc_socket_path} (--grpc_socket_path)")
            return port

        self.asyncio = self.cfg.batching.enabled if self.cfg.grpc_asyncio is None else self.cfg.grpc_asyncio
        if self.asyncio:
            self._loop = _event_loop()
            self.executor = futures.ThreadPoolExecutor(max_workers=self.cfg.max_workers, thread_name_prefix="model")

            async def build():
                server = grpc.aio.server(migration_thread_pool=self._pool, options=options)
                port = populate(server, AsyncPredictionServicer(self))
                await server.start()
                return server, port

            self._grpc, self.port = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        else:
            server = grpc.server(self._pool, options=options)
            self.port = populate(server, PredictionServicer(self))
            server.start()
            self._grpc = server
        self._update_health()
        self._config_watcher = watcher_for(self, {self.cfg.model_name} if self.cfg.model_name else set())
        self._start_http()
        rest = f", REST on port {self.rest_port}" if self.rest_port is not None else ""
        log.info("serving %s on port %d%s", ", ".join(f"{m.name} ({m.base_path})" for m in self.managers.values()), self.port, rest)
        return self

    def _start_http(self):
        from serving.model_servers.http_server import PROMETHEUS_PATH, HttpServer
        from serving.model_servers.rest_api import RestApi

        cfg = self.cfg
        try:
            if cfg.rest_api_port is not None:
                api = RestApi(self, PredictionServicer(self), ModelServicer(self))
                # REST handlers: a few threads do the work (more only pass the interpreter lock around, measured
                # in http_server.py); with batching, every request waiting for its batch holds one
                workers = cfg.max_workers if cfg.batching.enabled else min(cfg.max_workers, REST_WORKERS)
                # TF Serving's default path always; --monitoring_config_file's path too when it names another
                paths = tuple(dict.fromkeys(p for p in (cfg.prometheus_path, PROMETHEUS_PATH) if p))
                self._rest_http = HttpServer(cfg.host, cfg.rest_api_port, api, self.metrics.text, cfg.rest_api_max_body_bytes,
                                             metrics_paths=paths, workers=workers).start()
                self.rest_port = self._rest_http.port
            if cfg.metrics_port is not None:
                self._metrics_http = HttpServer(cfg.host, cfg.metrics_port, None, self.metrics.text, 0,
                                                metrics_paths=("/metrics", "/monitoring/prometheus/metrics")).start()
        except OSError as exc:
            self.stop(0)
            raise OperationFailedError(f"cannot bind HTTP port on {cfg.host} (REST {cfg.rest_api_port}, metrics {cfg.metrics_port}): {exc.strerror or exc}") from None

    def stop(self, grace: float = 10.0):
        """Graceful: health goes NOT_SERVING, new RPCs are refused, in-flight ones get `grace` seconds."""
        if self._config_watcher is not None:
            self._config_watcher.stop()
        if self._rest_http is not None:  # REST stops taking requests; those in flight get the grace, as gRPC's
            self._rest_http.stop(grace)
            self._rest_http = None
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
        for http in (self._rest_http, self._metrics_http):
            if http is not None:
                http.stop()
        self._rest_http = self._metrics_http = None

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

