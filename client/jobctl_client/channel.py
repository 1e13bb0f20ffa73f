"""The gRPC channel a client uses: message limits, load balancing, and retries through gRPC's service config.

gRPC retries in its own core (gRFC A6), so every attempt shares the call's one deadline, the delay before attempt
n is drawn uniformly from [0, min(initial * multiplier^(n-1), max)] (full jitter: clients that failed together do
not come back together), and a server's `grpc-retry-pushback-ms` is honoured. A hand-written loop around the stub
had none of that: each attempt got a fresh deadline.

Only UNAVAILABLE is retried: a restarting pod, a draining server, a full batching queue. RESOURCE_EXHAUSTED is not:
from TF Serving and from gRPC itself it means a message over the size limit, which fails again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import grpc

# The services a TF Serving client calls (the names are the wire's, the same for stock TF Serving and jobctl serve).
SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "grpc.health.v1.Health")
MAX_ATTEMPTS = 5  # gRPC caps maxAttempts at 5: more retries than 4 would be silently ignored
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def service_config(retries: int, backoff: float, max_backoff: float,
                   retry_codes: Sequence[str] = ("UNAVAILABLE",)) -> dict:
    """gRPC's service config with a retry policy for every TF Serving method; retries=0: no policy."""
    if not 0 <= retries <= MAX_ATTEMPTS - 1:
        raise ValueError(f"retries: expected 0 to {MAX_ATTEMPTS - 1} (gRPC caps attempts at {MAX_ATTEMPTS}), "
                         f"received {retries}")
    if backoff <= 0 or max_backoff < backoff:
        raise ValueError(f"backoff: expected 0 < backoff <= max_backoff, received backoff={backoff}, "
                         f"max_backoff={max_backoff}")
    method: dict = {"name": [{"service": s} for s in SERVICES]}
    if retries:
        method["retryPolicy"] = {
            "maxAttempts": retries + 1,
            "initialBackoff": f"{backoff:.3f}s",
            "maxBackoff": f"{max_backoff:.3f}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": list(retry_codes),
        }
    return {"methodConfig": [method]}


def channel_options(*, retries: int, backoff: float, max_backoff: float, max_message_bytes: int,
                    round_robin: bool = False, retry_codes: Sequence[str] = ("UNAVAILABLE",)) -> list[tuple]:
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config(retries, backoff, max_backoff, retry_codes))),
        # Our config, not one a DNS TXT record could supply.
        ("grpc.service_config_disable_resolution", 1),
        # gRPC keeps a request's bytes for a retry only up to this size (default 256 KiB) and silently stops
        # retrying bigger ones: an image batch is megabytes (256 x 224x224x3 uint8 = 38 MB), so keep as much
        # as one message may hold.
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
    ]
    if round_robin:
        # With a headless Service, DNS returns every pod: spread calls instead of sticking to one (serving#1618).
        options.append(("grpc.lb_policy_name", "round_robin"))
    return options


def make_channel(target: str, options: list[tuple], *, tls: bool = False,
                 root_certificates: Optional[Union[str, Path]] = None) -> grpc.Channel:
    if tls:
        roots = Path(root_certificates).read_bytes() if root_certificates else None
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options=options)
    return grpc.insecure_channel(target, options=options)
