"""The server's configuration: TF Serving's flags and its ModelServerConfig, under the same names where TF Serving
has them (model_servers/main.cc, config/model_server_config.proto), so one description fits both servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from jobs.errors import BadInputError

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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
    # TF Serving's REST API (--rest_api_port) and Prometheus at /monitoring/prometheus/metrics on the same port.
    # None disables (the CLI's --rest-api-port 0, as TF Serving's 0); 0 here binds any free port (tests).
    rest_api_port: Optional[int] = None
    rest_api_max_body_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # larger REST bodies get 413
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
        raise BadInputError(f"--model-config-file {path}: {exc}") from None
    out = []
    for c in cfg.model_config_list.config:
        policy = c.model_version_policy
        if policy.WhichOneof("policy_choice") not in (None, "latest"):
            raise BadInputError(f"--model-config-file {path}: model {c.name!r}: only the 'latest' version policy is supported")
        out.append(ModelEntry(c.name, Path(c.base_path), policy.latest.num_versions or 1, dict(c.version_labels)))
    if not out:
        raise BadInputError(f"--model-config-file {path}: no model in model_config_list")
    return out

