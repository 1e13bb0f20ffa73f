"""`jobctl serve` processes started with TF Serving's command line, for the TF Serving compatibility tests.

TF Serving's tests start `tensorflow_model_server --port=... --rest_api_port=... --model_name=... ...`; here the
same flags, in TF Serving's spelling, go to `python -m cli.main serve`, so the tests also check that a TF Serving
command line runs unchanged. Ports come from binding port 0; each server has its own Unix socket. Servers are
started together and waited for separately: their TensorFlow imports overlap instead of queueing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
RPC_TIMEOUT = 20.0
AVAILABLE = 30  # ModelVersionStatus.State.AVAILABLE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tf_serving_flags(*, port: int, rest_api_port: int, grpc_socket_path: Optional[str] = None,
                     model_name: Optional[str] = None, model_base_path: Optional[Path] = None,
                     model_config_file: Optional[Path] = None, model_config_file_poll_wait_seconds: Optional[int] = None,
                     monitoring_config_file: Optional[Path] = None, batching_parameters_file: Optional[Path] = None,
                     grpc_channel_arguments: str = "") -> list[str]:
    """The flags TF Serving's test base passes to tensorflow_model_server, spelled as TF Serving spells them.
    (It also passes --rest_api_timeout_in_ms, which `jobctl serve` does not have: tests/tfserving/CASES.md.)"""
    flags = [f"--port={port}", f"--rest_api_port={rest_api_port}"]
    if grpc_socket_path:
        flags.append(f"--grpc_socket_path={grpc_socket_path}")
    if model_config_file:
        flags.append(f"--model_config_file={model_config_file}")
    elif model_base_path:
        flags += [f"--model_name={model_name}", f"--model_base_path={model_base_path}"]
    else:
        raise ValueError("a server needs model_config_file or model_base_path")
    if monitoring_config_file:
        flags.append(f"--monitoring_config_file={monitoring_config_file}")
    if model_config_file_poll_wait_seconds is not None:
        flags.append(f"--model_config_file_poll_wait_seconds={model_config_file_poll_wait_seconds}")
    if batching_parameters_file:
        flags += ["--enable_batching", f"--batching_parameters_file={batching_parameters_file}"]
    # TF Serving's test base always adds grpc.so_reuseaddr=1 to the case's own arguments
    flags.append("--grpc_channel_arguments=" + ",".join(a for a in (grpc_channel_arguments, "grpc.so_reuseaddr=1") if a))
    return flags


class _PortTaken(Exception):
    """The server could not bind a port free_port() had proposed."""


@dataclass
class ServerProcess:
    """One `jobctl serve`; `ready()` waits (once) until it answers and its models are AVAILABLE."""

    proc: subprocess.Popen
    grpc_address: str
    rest_address: str
    socket_path: str
    log_path: Path
    models: tuple[str, ...] = ()
    relaunch: Optional[Callable[[], "ServerProcess"]] = field(default=None, repr=False)
    _ready: bool = field(default=False, repr=False)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            if "already in use" in self.log_tail().lower() and self.relaunch is not None:
                raise _PortTaken()
            raise AssertionError(f"jobctl serve exited with {self.proc.returncode}:\n{self.log_tail()}")

    def _start_again(self) -> None:
        """free_port() only proposes a port: between the proposal and the server's bind, another process (a client's
        ephemeral port, a server starting beside it) can take it. Start again on fresh ports."""
        fresh = self.relaunch()
        self.proc, self.grpc_address, self.rest_address = fresh.proc, fresh.grpc_address, fresh.rest_address
        self.socket_path, self.log_path, self.relaunch = fresh.socket_path, fresh.log_path, fresh.relaunch

    def ready(self, timeout: float = 180.0) -> "ServerProcess":
        """Wait until the server answers gRPC (NOT_FOUND "Servable ..." for a model it does not have, as TF
        Serving's test base checks) and every model in `models` has an AVAILABLE version. The timeout is generous
        because several servers start together on two shared cores."""
        if self._ready:
            return self
        started = time.monotonic()
        try:
            return self._wait_ready(timeout)
        except _PortTaken:
            self._start_again()
            return self.ready(timeout - (time.monotonic() - started))

    def _wait_ready(self, timeout: float) -> "ServerProcess":
        import grpc
        from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                             prediction_service_pb2_grpc)

        deadline = time.monotonic() + timeout
        pending = ["intentionally_missing_model", *self.models]
        with grpc.insecure_channel(self.grpc_address) as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            status = model_service_pb2_grpc.ModelServiceStub(channel)
            while pending:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise AssertionError(f"jobctl serve on {self.grpc_address}: {pending[0]} not ready after "
                                         f"{timeout} s:\n{self.log_tail()}")
                try:
                    if pending[0] == "intentionally_missing_model":
                        request = predict_pb2.PredictRequest()
                        request.model_spec.name = pending[0]
                        predict.Predict(request, timeout=2)
                    else:
                        request = get_model_status_pb2.GetModelStatusRequest()
                        request.model_spec.name = pending[0]
                        answer = status.GetModelStatus(request, timeout=2)
                        if any(v.state == AVAILABLE for v in answer.model_version_status):
                            pending.pop(0)
                            continue
                except grpc.RpcError as error:
                    if pending[0] == "intentionally_missing_model" and "Servable" in (error.details() or ""):
                        pending.pop(0)
                        continue
                time.sleep(0.2)
        self._ready = True
        return self

    def stop(self) -> None:
        stop_all([self])


def stop_all(servers) -> None:
    """Kill every server, as TF Serving's test base does at exit (graceful shutdown is tested in
    tests/test_serving_server.py; here it would only add its grace period per server)."""
    for server in servers:
        if server.proc.poll() is None:
            server.proc.kill()
    for server in servers:
        server.proc.wait(timeout=30)


def server_env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def start_server(workdir: Path, *, models: tuple[str, ...] = (), stderr=None, **flags) -> ServerProcess:
    """Start `jobctl serve` with TF Serving's flags (tf_serving_flags' keywords) without waiting for it. Its
    output goes to a log file under `workdir`, or to `stderr` when given (a case that reads it)."""
    port, rest_port = free_port(), free_port()
    socket_path = str(Path(workdir) / f"grpc-{port}.sock")
    argv = [sys.executable, "-m", "cli.main", "serve",
            *tf_serving_flags(port=port, rest_api_port=rest_port, grpc_socket_path=socket_path, **flags)]
    log_path = Path(workdir) / f"server-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=server_env(), stdout=log if stderr is None else subprocess.DEVNULL,
                                stderr=subprocess.STDOUT if stderr is None else stderr, text=stderr is not None)
    return ServerProcess(proc, f"localhost:{port}", f"localhost:{rest_port}", socket_path, log_path, tuple(models),
                         relaunch=lambda: start_server(workdir, models=models, stderr=stderr, **flags))


def call_rest(url: str, body=None, timeout: float = 20.0):
    """POST `body` as JSON (GET without one); the parsed JSON answer."""
    import json
    from urllib import request

    data = json.dumps(body).encode() if body is not None else None
    with request.urlopen(request.Request(url, data=data), timeout=timeout) as response:
        return json.loads(response.read().decode())
