"""`jobctl serve`: TF Serving's gRPC API, its status codes on bad input (server still serving afterwards), version
watching, labels, batching, health, reflection, metrics. One in-process server per module, real gRPC over TCP."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.serving import copy_version, in_process, self_signed_cert, shared_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from serving.model_servers.config import BatchingConfig, ServerConfig
    from serving.model_servers.server import ModelServer

    shared = shared_models()
    base = tmp_path_factory.mktemp("serve") / "ensemble"
    copy_version(shared["ensemble"], base, 1)
    cfg = ServerConfig(
        model_name="ensemble", base_path=base, port=0, host="127.0.0.1", poll_seconds=0.1,
        batching=BatchingConfig(enabled=True, max_batch_size=16, batch_timeout_micros=3000),
        max_request_batch_size=256, labels={"stable": 1, "canary": 2}, max_message_bytes=64 * 1024 * 1024,
    )
    server = ModelServer(cfg).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    yield {
        "server": server, "base": base, "shared": shared, "channel": channel,
        "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "models": model_service_pb2_grpc.ModelServiceStub(channel),
        "x": shared["data"][2], "y": shared["data"][3],
    }
    channel.close()
    server.stop(grace=1)


def request(images=None, model="ensemble", signature="", version=None, label=None, inputs=None, output_filter=()):
    from tensorflow_serving.apis import predict_pb2

    from serving.tensors import from_ndarray

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    if signature:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    if inputs is None:
        inputs = {"images": images if images is not None else np.zeros((1, 8, 8, 1), np.uint8)}
    for name, value in inputs.items():
        req.inputs[name].CopyFrom(value if not isinstance(value, np.ndarray) else from_ndarray(value))
    req.output_filter.extend(output_filter)
    return req


def outputs(response):
    from serving.tensors import to_ndarray

    return {k: to_ndarray(v, k) for k, v in response.outputs.items()}


def rpc_error(call, req) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(req, timeout=10)
    return info.value


def still_serving(env):
    got = outputs(env["predict"].Predict(request(env["x"][:2]), timeout=10))
    assert got["probabilities"].shape == (2, 10)


# ------------------------------------------------------------------------------------------------ the API
def test_predict_matches_the_model_in_process(env):
    x = env["x"][:40]
    resp = env["predict"].Predict(request(x), timeout=10)
    got = outputs(resp)
    want = in_process(env["shared"]["ensemble"], x)
    assert np.abs(got["probabilities"] - want["probabilities"]).max() < 1e-6
    np.testing.assert_array_equal(got["class_ids"], want["class_ids"])
    assert resp.model_spec.name == "ensemble" and resp.model_spec.version.value == 1
    assert resp.model_spec.signature_name == "serving_default"
    # output_filter returns only what was asked for
    only = outputs(env["predict"].Predict(request(x, output_filter=["class_ids"]), timeout=10))
    assert list(only) == ["class_ids"]
    # the label "stable" points at version 1
    by_label = env["predict"].Predict(request(x[:1], label="stable"), timeout=10)
    assert by_label.model_spec.version.value == 1


def test_metadata_and_status(env):
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "ensemble"
    resp = env["predict"].GetModelMetadata(req, timeout=10)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(defs)
    sig = defs.signature_def["serving_default"]
    assert list(sig.inputs) == ["images"] and sorted(sig.outputs) == ["class_ids", "member_probabilities", "probabilities"]
    assert [d.size for d in sig.inputs["images"].tensor_shape.dim] == [-1, 8, 8, 1]

    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "ensemble"
    status = env["models"].GetModelStatus(req, timeout=10)
    states = {s.version: s.state for s in status.model_version_status}
    assert states.get(1) == get_model_status_pb2.ModelVersionStatus.AVAILABLE

    from serving.client import PredictClient

    with PredictClient(f"127.0.0.1:{env['server'].port}", "ensemble") as client:
        assert client.class_names() == [str(i) for i in range(10)]
        top = client.top_k(env["x"][:3], k=2)
        assert len(top) == 3 and all(len(t) == 2 and t[0][2] >= t[1][2] for t in top)
        assert top[0][0][1] == str(top[0][0][0])


def test_classify_over_tf_examples(env):
    from tensorflow.core.example import example_pb2, feature_pb2
    from tensorflow_serving.apis import classification_pb2

    x = env["x"][:3]
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "ensemble"
    for img in x:
        ex = example_pb2.Example()
        ex.features.feature["images"].CopyFrom(feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[img.tobytes()])))
        req.input.example_list.examples.append(ex)
    resp = env["predict"].Classify(req, timeout=10)
    want = in_process(env["shared"]["ensemble"], x)["probabilities"]
    for row, c in zip(want, resp.result.classifications):
        assert [k.label for k in c.classes] == [str(i) for i in range(10)]
        assert np.allclose([k.score for k in c.classes], row, atol=1e-6)


def test_health_and_reflection(env):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(env["channel"])
    for service in ("", "tensorflow.serving.PredictionService", "ensemble"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(env["channel"])
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService", "grpc.health.v1.Health"} <= names


# ------------------------------------------------------------------------------------------------ bad input
def _garbage_tensor():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_UINT8,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (2, 8, 8, 1)]),
        tensor_content=b"\x00garbage",
    )


BAD = [
    (dict(model="nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    (dict(model=""), grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    (dict(version=7), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(ensemble, 7)"),
    (dict(label="prod"), grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: prod"),
    (dict(signature="serve_me"), grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "serve_me" not found.'),
    (dict(inputs={}), grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {images}"),
    (dict(inputs={"images": np.zeros((1, 8, 8, 1), np.uint8), "extra": np.zeros(1, np.float32)}),
     grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {extra}"),
    (dict(inputs={"pixels": np.zeros((1, 8, 8, 1), np.uint8)}), grpc.StatusCode.INVALID_ARGUMENT,
     "Sent extra: {pixels}. Missing but required: {images}."),
    (dict(images=np.zeros((1, 8, 8, 1), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
     "Expects arg[0] to be uint8 but float is provided (input 'images')"),
    (dict(images=np.zeros((2, 8, 8), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected shape [?,8,8,1], received [2,8,8] (images without their channel axis: add a last "
     "dimension of size 1)"),
    (dict(images=np.zeros((8, 8, 1), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
     "received [8,8,1] (one example: add the batch dimension)"),
    (dict(images=np.zeros((2, 28, 28, 1), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
     "expected shape [?,8,8,1], received [2,28,28,1]"),
    (dict(images=np.zeros((0, 8, 8, 1), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
    (dict(images=np.zeros((257, 8, 8, 1), np.uint8)), grpc.StatusCode.INVALID_ARGUMENT,
     "batch of 257 examples is above this server's limit of 256"),
    (dict(inputs={"images": _garbage_tensor()}), grpc.StatusCode.INVALID_ARGUMENT,
     "tensor_content has 8 bytes; shape [2, 8, 8, 1] of uint8 needs 128 bytes"),
    (dict(images=np.zeros((1, 8, 8, 1), np.uint8), output_filter=["logits"]), grpc.StatusCode.INVALID_ARGUMENT,
     "output tensor alias not found in signature: logits"),
]


@pytest.mark.parametrize("kwargs, code, message", BAD, ids=[f"{i}-{b[2][:40]}" for i, b in enumerate(BAD)])
def test_bad_requests_get_tf_serving_status_codes(env, kwargs, code, message):
    err = rpc_error(env["predict"].Predict, request(**kwargs))
    assert err.code() == code
    assert message in err.details()
    still_serving(env)


def _tensor_protos():
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    dtypes = [types_pb2.DT_UINT8, types_pb2.DT_FLOAT, types_pb2.DT_INT64, types_pb2.DT_STRING, types_pb2.DT_BOOL,
              types_pb2.DT_HALF, types_pb2.DT_INVALID, 99]

    @st.composite
    def build(draw):
        shape = draw(st.lists(st.integers(-2, 9), max_size=5))
        proto = tensor_pb2.TensorProto(
            dtype=draw(st.sampled_from(dtypes)),
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in shape],
                                                           unknown_rank=draw(st.booleans()) and draw(st.booleans())),
        )
        kind = draw(st.sampled_from(["content", "int", "float", "string", "none"]))
        if kind == "content":
            proto.tensor_content = draw(st.binary(max_size=700))
        elif kind == "int":
            proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=70)))
        elif kind == "float":
            proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=70)))
        elif kind == "string":
            proto.string_val.extend(draw(st.lists(st.binary(max_size=10), max_size=4)))
        return proto

    return build()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensor=_tensor_protos(), name=st.sampled_from(["images", "images", "x"]))
def test_fuzzed_tensors_never_break_the_server(env, tensor, name):
    try:
        resp = env["predict"].Predict(request(inputs={name: tensor}), timeout=10)
        assert outputs(resp)["probabilities"].shape[1:] == (10,)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    still_serving(env)


# ------------------------------------------------------------------------------------------------ batching
def test_concurrent_requests_are_batched_and_answered_correctly(env):
    x = env["x"][:96]
    want = in_process(env["shared"]["ensemble"], x)["probabilities"]
    before = env["server"].metrics.batch_size.labels("ensemble", "1")._sum.get()

    def one(i):
        return outputs(env["predict"].Predict(request(x[i : i + 1]), timeout=10))["probabilities"][0]

    with ThreadPoolExecutor(16) as pool:
        got = np.stack(list(pool.map(one, range(len(x)))))
    assert np.abs(got - want).max() < 1e-6  # every caller gets its own row back
    # a request above max_batch_size (16) is split, not rejected
    big = outputs(env["predict"].Predict(request(x[:40]), timeout=10))["probabilities"]
    assert np.abs(big - want[:40]).max() < 1e-6
    text = env["server"].metrics.text()
    assert 'jobctl_serving_batch_size_count{model="ensemble",version="1"}' in text
    after = env["server"].metrics.batch_size.labels("ensemble", "1")._sum.get()
    assert after - before == 96 + 40  # every example went through the model exactly once


def test_metrics_carry_tf_serving_names_and_labels(env):
    """TF Serving's series (servables/tensorflow/util.cc): request_count by model_name and status, request_latency
    in microseconds by model_name, API and entrypoint for successful requests only; jobctl's own keep a prefix."""
    metrics = env["server"].metrics
    ok, failed = metrics.request_count("ensemble", "OK"), metrics.request_count("ensemble", "FAILED_PRECONDITION")
    still_serving(env)
    rpc_error(env["predict"].Predict, request(signature="nope"))
    rpc_error(env["predict"].Predict, request(model="nobody"))
    assert metrics.request_count("ensemble", "OK") == ok + 1
    assert metrics.request_count("ensemble", "FAILED_PRECONDITION") == failed + 1
    text = metrics.text()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_count{model_name="unknown",status="NOT_FOUND"}' in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="ensemble",API="Predict",entrypoint="GRPC",le="10"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="ensemble",API="Predict",entrypoint="GRPC",le="+Inf"}' in text
    assert 'API="Predict",entrypoint="GRPC",status' not in text  # latency has no status: failures are not timed
    assert 'jobctl_serving_model_version_state{model="ensemble",version="1"} 30.0' in text
    assert "jobctl_serving_requests" not in text and "jobctl_serving_request_latency" not in text


# ------------------------------------------------------------------------------------------------ versions
def _status(env):
    from tensorflow_serving.apis import get_model_status_pb2

    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "ensemble"
    return {s.version: (s.state, s.status.error_message) for s in env["models"].GetModelStatus(req, timeout=10).model_version_status}


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_new_versions_load_while_serving_and_corrupt_ones_are_skipped(env):
    base = env["base"]
    AVAILABLE, END = 30, 50
    # a half-written version (no saved_model.pb yet) and a non-integer directory: ignored, version 1 serves
    (base / "5").mkdir()
    (base / ".tmp-6-abc").mkdir()
    # a corrupt version: logged, reported, never served
    bad = base / "3"
    shutil.copytree(env["shared"]["ensemble"], bad)
    (bad / "saved_model.pb").write_bytes(b"this is not a protobuf")
    assert _wait(lambda: _status(env).get(3, (0,))[0] == END)
    state, error = _status(env)[3]
    assert "3" in error or "saved_model" in error.lower() or error
    assert env["predict"].Predict(request(env["x"][:1]), timeout=10).model_spec.version.value == 1

    # traffic keeps flowing while a good version 4 appears: no request fails, then answers come from 4
    stop, failures, versions = threading.Event(), [], set()

    def hammer():
        while not stop.is_set():
            try:
                versions.add(env["predict"].Predict(request(env["x"][:2]), timeout=10).model_spec.version.value)
            except grpc.RpcError as err:
                failures.append(err)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        member = env["shared"]["members"][0]  # a different model: answers change with the version
        copy_version(member, base, 4)
        assert _wait(lambda: env["predict"].Predict(request(env["x"][:1]), timeout=10).model_spec.version.value == 4)
    finally:
        stop.set()
        t.join()
    assert failures == [] and versions == {1, 4}
    st = _status(env)
    assert st[4][0] == AVAILABLE and st[1][0] == END  # latest policy: the old version is unloaded after the swap
    got = outputs(env["predict"].Predict(request(env["x"][:5]), timeout=10))["probabilities"]
    assert np.abs(got - in_process(member, env["x"][:5])["probabilities"]).max() < 1e-6
    # version 1 is gone; the label pointing at it now fails cleanly, the label logic still works
    assert rpc_error(env["predict"].Predict, request(env["x"][:1], label="stable")).code() == grpc.StatusCode.NOT_FOUND
    # the member has no member_probabilities output: clients see the new signature
    err = rpc_error(env["predict"].Predict, request(env["x"][:1], output_filter=["member_probabilities"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------------------------ the batcher alone
def test_batcher_merges_slices_and_survives_retirement():
    from serving.model_servers.batching import Batcher
    from serving.model_servers.config import BatchingConfig

    calls = []

    def run(inputs):
        calls.append(len(inputs["x"]))
        time.sleep(0.01)
        return {"y": inputs["x"] * 2}

    b = Batcher(run, BatchingConfig(enabled=True, max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1))
    xs = [np.full((1 + i % 3, 2), i, dtype=np.int64) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(lambda x: b.submit({"x": x}, len(x), 5)["y"], xs))
    assert all(np.array_equal(o, x * 2) for o, x in zip(outs, xs))  # each caller gets its own rows back
    assert max(calls) > 1 and max(calls) <= 8 and sum(calls) == sum(len(x) for x in xs)
    big = np.arange(40).reshape(20, 2)
    assert np.array_equal(b.submit({"x": big}, 20, 5)["y"], big * 2)  # above max_batch_size: chunked, not refused
    # a version retired while requests are in flight: queued ones are answered, later ones run unbatched
    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(b.submit, {"x": x}, len(x), 5) for x in xs[:4]]
        time.sleep(0.005)
        b.stop()
        after = b.submit({"x": xs[5]}, len(xs[5]), 5)
        assert all(np.array_equal(f.result(timeout=5)["y"], x * 2) for f, x in zip(futs, xs[:4]))
    assert np.array_equal(after["y"], xs[5] * 2)


def test_warmup_requests_run_before_a_version_serves(tmp_path):
    """TF Serving's assets.extra/tf_serving_warmup_requests run at load: a version whose warmup fails is not served."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    from serving.model_servers.config import ServerConfig
    from serving.model_servers.server import ModelServer
    from serving.tensors import from_ndarray

    shared = shared_models()
    base = tmp_path / "m"
    for version, input_name in ((1, "images"), (2, "pixels")):
        vdir = copy_version(shared["members"][0], base, version)
        (vdir / "assets.extra").mkdir()
        with tf.io.TFRecordWriter(str(vdir / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m"))
            req.inputs[input_name].CopyFrom(from_ndarray(shared["data"][2][:1]))
            writer.write(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req)).SerializeToString())
    server = ModelServer(ServerConfig("m", base, port=0, host="127.0.0.1", poll_seconds=3600, num_versions=2)).start()
    try:
        manager = server.managers["m"]
        assert manager.available() == [1]
        assert manager.versions[2].state == 50 and "pixels" in manager.versions[2].error
    finally:
        server.stop(grace=0)


# ------------------------------------------------------------------------------------------------ transports
@pytest.mark.parametrize("batching,use_asyncio,tls", [(False, True, False), (True, False, False), (True, None, True)],
                         ids=["unbatched-asyncio", "batched-threads", "batched-asyncio-tls"])
def test_both_grpc_transports_answer_alike(tmp_path, batching, use_asyncio, tls):
    """Batching picks the asyncio transport by default and no batching the thread pool; forced the other way
    each still answers every concurrent caller its own rows, maps bad input to INVALID_ARGUMENT, counts metrics,
    and (asyncio over TLS) refuses a plaintext client."""
    from serving.model_servers.config import BatchingConfig, ServerConfig
    from serving.model_servers.server import ModelServer

    shared = shared_models()
    base = tmp_path / "ensemble"
    copy_version(shared["ensemble"], base, 1)
    extra = {}
    if tls:
        cert, key = self_signed_cert(tmp_path)
        extra = {"tls_cert": cert, "tls_key": key}
    cfg = ServerConfig("ensemble", base, port=0, host="127.0.0.1", poll_seconds=3600, grpc_asyncio=use_asyncio,
                       batching=BatchingConfig(enabled=batching, max_batch_size=8, batch_timeout_micros=2000), **extra)
    server = ModelServer(cfg).start()
    assert server.asyncio == (batching if use_asyncio is None else use_asyncio)
    if tls:
        channel = grpc.secure_channel(f"localhost:{server.port}", grpc.ssl_channel_credentials(cert.read_bytes()))
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        x = shared["data"][2][:24]
        want = in_process(shared["ensemble"], x)["probabilities"]
        with ThreadPoolExecutor(8) as pool:
            got = np.stack(list(pool.map(lambda i: outputs(stub.Predict(request(x[i : i + 1]), timeout=10))["probabilities"][0], range(len(x)))))
        assert np.abs(got - want).max() < 1e-6
        err = rpc_error(stub.Predict, request(x[:1].astype(np.float32)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "images" in err.details()
        text = server.metrics.text()
        assert ':tensorflow:serving:request_count{model_name="ensemble",status="OK"} 24' in text
        assert ':tensorflow:serving:request_count{model_name="ensemble",status="INVALID_ARGUMENT"} 1' in text
        if tls:
            plain = grpc.insecure_channel(f"127.0.0.1:{server.port}")
            try:
                err = rpc_error(prediction_service_pb2_grpc.PredictionServiceStub(plain).Predict, request(x[:1]))
                assert err.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                plain.close()
    finally:
        channel.close()
        server.stop(grace=0)


@pytest.mark.parametrize("got, hint", [
    ((3, 28, 28), ""),  # wrong size: no hint (it is not a missing axis)
    ((3, 8, 8), " (images without their channel axis: add a last dimension of size 1)"),
    ((8, 8, 1), " (one example: add the batch dimension)"),
])
def test_a_shape_hint_is_given_only_when_the_fix_is_a_missing_axis(got, hint):
    from serving.tensors import shape_mismatch

    message = shape_mismatch("images", [-1, 8, 8, 1], got)
    assert message == f"input 'images': expected shape [?,8,8,1], received [{','.join(map(str, got))}]{hint}"
    assert shape_mismatch("images", [-1, 8, 8, 1], (5, 8, 8, 1)) is None
