"""The server's configuration: TF Serving's flags and its ModelServerConfig, under the same names where TF Serving
has them (model_servers/main.cc, config/model_server_config.proto), so one description fits both servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from jobs.errors import BadInputError

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
ALL_VERSIONS = 1 << 30  # model_version_policy all: a "latest N" no base path reaches


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
    # TF Serving's --model_config_file_poll_wait_seconds: re-read the file this often (0: read once, at start)
    model_config_file: Optional[Path] = None
    model_config_poll_seconds: float = 0.0
    grpc_socket_path: Optional[str] = None  # --grpc_socket_path: also listen on this Unix socket
    # --grpc_channel_arguments "k=v,k=v": passed to the gRPC server as options (after jobctl's own, so they win)
    grpc_channel_arguments: list[tuple[str, object]] = field(default_factory=list)
    # --monitoring_config_file's prometheus_config: serve Prometheus metrics on the REST port at this path
    prometheus_path: Optional[str] = None
    # TF Serving's --enable_signature_method_name_check (off there by default): Classify/Regress only on signatures
    # whose method_name says so; off, any signature shaped for them serves (TF2 exports say "predict" on all)
    signature_method_name_check: bool = False


@dataclass
class ModelEntry:
    name: str
    base_path: Path
    num_versions: int = 1
    labels: dict[str, int] = field(default_factory=dict)
    versions: Optional[tuple[int, ...]] = None  # model_version_policy specific: exactly these versions


def _parse_text_proto(path: Path, message, flag: str):
    """TF Serving's ParseProtoTextFile, with its wording (the protobuf library's line, then its status)."""
    from google.protobuf import text_format

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BadInputError(f"{flag} {path}: cannot read ({exc.strerror or exc}); expected a text-format "
                            f"{message.DESCRIPTOR.full_name} file") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise BadInputError(f"{flag} {path}: Error parsing text-format {message.DESCRIPTOR.full_name}: {str(exc).rstrip('.')}. "
                            f"Invalid protobuf file: '{path}'") from None


def read_model_config(path: Path) -> list[ModelEntry]:
    """TF Serving's ModelServerConfig text proto (serving/config/models.config) -> entries."""
    from tensorflow_serving.config import model_server_config_pb2

    cfg = _parse_text_proto(path, model_server_config_pb2.ModelServerConfig(), "--model_config_file")
    out = []
    for c in cfg.model_config_list.config:
        policy = c.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":  # every version on disk
            entry = ModelEntry(c.name, Path(c.base_path), ALL_VERSIONS, dict(c.version_labels))
        elif which == "specific":
            versions = tuple(sorted(set(policy.specific.versions)))
            if not versions:
                raise BadInputError(f"--model_config_file {path}: model {c.name!r}: the specific version policy lists no versions")
            entry = ModelEntry(c.name, Path(c.base_path), len(versions), dict(c.version_labels), versions)
        else:  # latest (TF Serving's default: the newest one)
            entry = ModelEntry(c.name, Path(c.base_path), policy.latest.num_versions or 1, dict(c.version_labels))
        out.append(entry)
    if not out:
        raise BadInputError(f"--model_config_file {path}: no model in model_config_list")
    return out


def read_batching_parameters(path: Path) -> BatchingConfig:
    """TF Serving's --batching_parameters_file (a BatchingParameters text proto); unset fields keep jobctl's
    defaults. Fields this server has no use for (allowed_batch_sizes, padding, thread pool name) are accepted,
    as TF Serving accepts them, and ignored: they change how TF Serving batches, not the answers."""
    msg = _parse_text_proto(path, _tf_serving_message("BatchingParameters"), "--batching_parameters_file")
    out = BatchingConfig(enabled=True)
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if msg.HasField(name):
            value = getattr(msg, name).value
            if value < (0 if name == "batch_timeout_micros" else 1):
                raise BadInputError(f"--batching_parameters_file {path}: {name} is {value}; expected "
                                    f"{'0 or more' if name == 'batch_timeout_micros' else 'at least 1'}")
            setattr(out, name, int(value))
    return out


def read_monitoring_config(path: Path) -> Optional[str]:
    """TF Serving's --monitoring_config_file (MonitoringConfig text proto) -> the Prometheus path, or None."""
    msg = _parse_text_proto(path, _tf_serving_message("MonitoringConfig"), "--monitoring_config_file")
    if not msg.prometheus_config.enable:
        return None
    return msg.prometheus_config.path or "/monitoring/prometheus/metrics"  # TF Serving's default path


def parse_grpc_channel_arguments(text: str) -> list[tuple[str, object]]:
    """TF Serving's --grpc_channel_arguments: "key=value,key=value"; integer values become ints (gRPC's type)."""
    out: list[tuple[str, object]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInputError(f"--grpc_channel_arguments: expected KEY=VALUE[,KEY=VALUE...], received {item!r} in {text!r}")
        out.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return out


_MESSAGES: dict = {}


def _tf_serving_message(name: str):
    """BatchingParameters and MonitoringConfig as TF Serving's protos define them (session_bundle_config.proto,
    monitoring_config.proto; the tensorflow-serving-api package ships neither), built in a private descriptor
    pool so that a compiled copy of those files elsewhere never clashes with these."""
    if not _MESSAGES:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

        pool = descriptor_pool.DescriptorPool()
        wrappers = descriptor_pb2.FileDescriptorProto()
        wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
        pool.Add(wrappers)
        f = descriptor_pb2.FileDescriptorProto(name="jobctl/tf_serving_config.proto", package="tensorflow.serving",
                                               syntax="proto3", dependency=[wrappers.name])
        T = descriptor_pb2.FieldDescriptorProto
        b = f.message_type.add(name="BatchingParameters")
        for number, field_name, type_name in ((1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
                                             (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
                                             (5, "thread_pool_name", "StringValue"), (8, "enable_large_batch_splitting", "BoolValue"),
                                             (9, "max_execution_batch_size", "Int64Value")):
            b.field.add(name=field_name, number=number, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                        type_name=f".google.protobuf.{type_name}")
        b.field.add(name="allowed_batch_sizes", number=6, type=T.TYPE_INT64, label=T.LABEL_REPEATED)
        b.field.add(name="pad_variable_length_inputs", number=7, type=T.TYPE_BOOL, label=T.LABEL_OPTIONAL)
        p = f.message_type.add(name="PrometheusConfig")
        p.field.add(name="enable", number=1, type=T.TYPE_BOOL, label=T.LABEL_OPTIONAL)
        p.field.add(name="path", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
        m = f.message_type.add(name="MonitoringConfig")
        m.field.add(name="prometheus_config", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                    type_name=".tensorflow.serving.PrometheusConfig")
        pool.Add(f)
        for n in ("BatchingParameters", "MonitoringConfig"):
            _MESSAGES[n] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
    return _MESSAGES[name]()
