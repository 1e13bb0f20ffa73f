"""What every RPC shares: status mapping, latency and counting. Errors become their gRPC codes; an unexpected
error (a kernel error, a bug) becomes INTERNAL and the server keeps serving. Predict, Classify and Regress are
counted and timed as TF Serving counts them (metrics.py); the other methods are not, as in TF Serving."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Mapping, Protocol

import grpc

from serving.errors import ServingError
from serving.model_servers.metrics import Metrics

log = logging.getLogger("jobctl.serving")


# the methods TF Serving counts in :tensorflow:serving:request_count and times in request_latency
COUNTED = frozenset({"Predict", "Classify", "Regress"})


def metric_model(server: "ServerState", name: str) -> str:
    """Bounded label cardinality: a name this server does not serve is counted as `unknown`."""
    return name if name in server.managers else "unknown"


class ServerState(Protocol):
    """What a servicer reads of the server that owns it (declared here, so servicers never import the server)."""

    managers: Mapping[str, object]
    metrics: Metrics
    cfg: object  # config.ServerConfig

    def servable(self, model_spec) -> tuple: ...


class Instrumented:
    """Status, latency and counting for every RPC, mapped to gRPC codes; unexpected errors become INTERNAL."""

    def __init__(self, server: ServerState):
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
            if method in COUNTED:
                self.server.metrics.observe(metric_model(self.server, model), method, "GRPC", code.name, time.perf_counter() - t0)

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
            if method in COUNTED:
                self.server.metrics.observe(metric_model(self.server, model), method, "GRPC", code.name, time.perf_counter() - t0)
        await context.abort(code, error)

