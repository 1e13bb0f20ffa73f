"""jobctl_client's retries go through gRPC's service config, against a real gRPC server that fails on purpose:
UNAVAILABLE is retried (an image batch above gRPC's default 256 KiB retry buffer too), other codes are not, and
the call's one deadline bounds every attempt together. No TensorFlow: the server speaks jobctl_client's messages."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from jobctl_client import PredictClient, RpcFailed
from jobctl_client.channel import service_config
from jobctl_client.protos.tensorflow_serving.apis import predict_pb2
from jobctl_client.tensors import from_ndarray, to_ndarray


class FlakyPredict:
    """Predict answers `fail_code` to the first `failures` attempts (after `delay` seconds each), then echoes the
    input's sum as `total`. Records each attempt's arrival time and request size."""

    def __init__(self, failures: int, fail_code=grpc.StatusCode.UNAVAILABLE, delay: float = 0.0):
        self.failures, self.fail_code, self.delay = failures, fail_code, delay
        self.attempts: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    def __call__(self, request, context):
        with self.lock:
            self.attempts.append((time.monotonic(), request.ByteSize()))
            n = len(self.attempts)
        if n <= self.failures:
            time.sleep(self.delay)
            context.abort(self.fail_code, f"attempt {n} fails on purpose")
        x = to_ndarray(request.inputs["x"], "x")
        response = predict_pb2.PredictResponse()
        response.outputs["total"].CopyFrom(from_ndarray(np.array([x.astype(np.int64).sum()])))
        return response


@pytest.fixture
def flaky():
    servers = []

    def start(handler: FlakyPredict) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                             options=[("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService",
            {"Predict": grpc.unary_unary_rpc_method_handler(
                handler, request_deserializer=predict_pb2.PredictRequest.FromString,
                response_serializer=predict_pb2.PredictResponse.SerializeToString)})])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=0)


def test_unavailable_twice_then_an_answer(flaky):
    handler = FlakyPredict(failures=2)
    x = np.arange(12, dtype=np.uint8).reshape(1, 12)
    with PredictClient(flaky(handler), "m", input_name="x", retries=3, backoff=0.2, timeout=10) as client:
        out = client.predict(x)
    assert int(out["total"][0]) == int(x.sum())
    assert len(handler.attempts) == 3


def test_the_retry_policy_handed_to_grpc():
    """gRPC draws each wait from [0, min(initialBackoff * multiplier^(n-1), maxBackoff)] (full jitter, gRFC A6)."""
    (method,) = service_config(retries=3, backoff=0.2, max_backoff=5.0)["methodConfig"]
    assert {n["service"] for n in method["name"]} >= {"tensorflow.serving.PredictionService",
                                                      "tensorflow.serving.ModelService"}
    assert method["retryPolicy"] == {"maxAttempts": 4, "initialBackoff": "0.200s", "maxBackoff": "5.000s",
                                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
    assert "retryPolicy" not in service_config(retries=0, backoff=0.2, max_backoff=5.0)["methodConfig"][0]


def test_an_image_batch_above_the_default_retry_buffer_is_retried(flaky):
    """gRPC stops retrying a request whose bytes exceed grpc.per_rpc_retry_buffer_size (256 KiB by default); the
    client raises it to the message limit, so a batch of 256 32x32x3 images (786 KB) is retried like any other."""
    handler = FlakyPredict(failures=2)
    images = np.random.default_rng(0).integers(0, 256, size=(256, 32, 32, 3), dtype=np.uint8)
    with PredictClient(flaky(handler), "m", input_name="x", retries=3, backoff=0.05, timeout=20) as client:
        out = client.predict(images)
    assert int(out["total"][0]) == int(images.astype(np.int64).sum())
    assert len(handler.attempts) == 3 and min(size for _, size in handler.attempts) > 256 * 1024


def test_a_request_error_is_not_retried(flaky):
    handler = FlakyPredict(failures=5, fail_code=grpc.StatusCode.INVALID_ARGUMENT)
    with PredictClient(flaky(handler), "m", input_name="x", retries=4, backoff=0.05) as client:
        with pytest.raises(RpcFailed) as info:
            client.predict(np.zeros((1, 3), np.float32))
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.bad_request
    assert "attempt 1 fails on purpose" in info.value.details and len(handler.attempts) == 1


def test_retries_stop_at_the_calls_one_deadline(flaky):
    """Every attempt takes 0.4 s and fails UNAVAILABLE. With a fresh 1 s deadline per attempt (the old loop), all
    5 attempts would run and the last UNAVAILABLE be raised; the call's one deadline stops them after 3 at most."""
    handler = FlakyPredict(failures=100, delay=0.4)
    with PredictClient(flaky(handler), "m", input_name="x", retries=4, backoff=0.05, timeout=1.0) as client:
        with pytest.raises(RpcFailed) as info:
            client.predict(np.zeros((1, 3), np.float32))
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1 <= len(handler.attempts) <= 3, handler.attempts


def test_retries_exhausted_gives_the_servers_last_answer(flaky):
    handler = FlakyPredict(failures=100)
    with PredictClient(flaky(handler), "m", input_name="x", retries=2, backoff=0.05) as client:
        with pytest.raises(RpcFailed) as info:
            client.predict(np.zeros((1, 3), np.float32))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "attempt 3 fails on purpose" in info.value.details
    assert len(handler.attempts) == 3


@pytest.mark.parametrize("kwargs, words", [
    ({"retries": 5}, "retries: expected 0 to 4"),
    ({"retries": -1}, "retries: expected 0 to 4"),
    ({"backoff": 0}, "backoff: expected 0 < backoff"),
    ({"backoff": 2, "max_backoff": 1}, "backoff: expected 0 < backoff"),
])
def test_a_retry_policy_grpc_would_not_honour_is_refused(kwargs, words):
    args = {"retries": 3, "backoff": 0.2, "max_backoff": 5.0, **kwargs}
    with pytest.raises(ValueError, match=words):
        service_config(**args)


def test_the_cli_refuses_more_retries_than_grpc_allows():
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["predict", "--model", "m", "--npz", "x.npz", "--retries", "5"])
    assert result.exit_code == 2 and "--retries" in result.output
