"""TF Serving's REST API in `jobctl serve` (serving/model_servers/rest_api.py, json_tensor.py, http_server.py):
every endpoint, the answers' JSON shapes, the bad-input battery with TF Serving's HTTP codes and texts (the server
still serving after each), a fuzzed JSON body, Prometheus on the REST port, and `jobctl predict --rest`."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.serving import copy_version, export_half_plus_two, in_process, shared_models

pytestmark = pytest.mark.slow
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from serving.model_servers.config import ModelEntry, ServerConfig
    from serving.model_servers.server import ModelServer

    shared = shared_models()
    root = tmp_path_factory.mktemp("rest")
    copy_version(shared["ensemble"], root / "ensemble", 1)
    export_half_plus_two(root / "half_plus_two", 123)
    cfg = ServerConfig("ensemble", root / "ensemble", port=0, host="127.0.0.1", poll_seconds=3600, labels={"stable": 1},
                       rest_api_port=0, rest_api_max_body_bytes=MAX_BODY,
                       extra_models=[ModelEntry("default", root / "half_plus_two")])
    server = ModelServer(cfg).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    yield {"server": server, "url": f"http://127.0.0.1:{server.rest_port}", "shared": shared,
           "x": shared["data"][2][:3], "predict": prediction_service_pb2_grpc.PredictionServiceStub(channel)}
    channel.close()
    server.stop(grace=1)


def call(env, path, body=None, method=None):
    """(HTTP status, parsed JSON answer)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(env["url"] + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def still_serving(env):
    status, answer = call(env, "/v1/models/ensemble:predict", {"instances": env["x"][:1].tolist()})
    assert status == 200 and len(answer["predictions"]) == 1


# ------------------------------------------------------------------------------------------------ endpoints
def test_model_status_by_model_version_and_label(env):
    want = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/ensemble", "/v1/models/ensemble/versions/1", "/v1/models/ensemble/labels/stable"):
        assert call(env, path) == (200, want)
    assert call(env, "/v1/models/ensemble/versions/9") == (404, {"error": "Could not find version 9 of model ensemble"})
    assert call(env, "/v1/models") == (400, {"error": "Missing model name in request."})
    assert call(env, "/v1/models/nope") == (404, {"error": "Could not find any versions of model nope"})


def test_model_metadata_has_tf_servings_shape(env):
    status, answer = call(env, "/v1/models/default/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": "default", "signature_name": "", "version": "123"}
    defs = answer["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    x = defs["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False}
    assert defs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert "jobctl" not in answer["metadata"]  # a model without jobctl.json answers exactly as TF Serving would
    status, by_label = call(env, "/v1/models/ensemble/labels/stable/metadata")
    assert status == 200 and by_label["model_spec"]["version"] == "1"
    assert by_label["metadata"]["jobctl"]["class_names"] == [str(i) for i in range(10)]


def test_predict_row_and_columnar_answer_as_the_model(env):
    x = env["x"]
    want = in_process(env["shared"]["ensemble"], x)
    status, row = call(env, "/v1/models/ensemble:predict", {"instances": x.tolist()})
    assert status == 200 and len(row["predictions"]) == 3
    got = np.array([p["probabilities"] for p in row["predictions"]])
    assert np.abs(got - want["probabilities"]).max() < 1e-6
    assert [p["class_ids"] for p in row["predictions"]] == want["class_ids"].tolist()
    for path in ("/v1/models/ensemble/versions/1:predict", "/v1/models/ensemble/labels/stable:predict"):
        status, col = call(env, path, {"signature_name": "serving_default", "inputs": {"images": x.tolist()}})
        assert status == 200 and set(col["outputs"]) == set(want)
        assert np.abs(np.array(col["outputs"]["probabilities"]) - want["probabilities"]).max() < 1e-6


def test_half_plus_two_answers_as_tf_servings_own_tests(env):
    """The answers TF Serving's tensorflow_model_server_test.py expects from half_plus_two, over REST."""
    assert call(env, "/v1/models/default:predict", {"instances": [[2.0], [3.0], [4.0]]}) == (200, {"predictions": [[3.0], [3.5], [4.0]]})
    assert call(env, "/v1/models/default:predict", {"inputs": [[2.0], [3.0], [4.0]]}) == (200, {"outputs": [[3.0], [3.5], [4.0]]})
    assert call(env, "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [[["", 3.0]]]})
    assert call(env, "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}) == (200, {"results": [3.0]})
    # a context's features reach every example (TF Serving prepends the context's bytes)
    assert call(env, "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}, {}]}) == (200, {"results": [4.0, 4.0]})


def test_classify_regress_and_multi_inference_over_grpc(env):
    from tensorflow.core.example import example_pb2
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(2.0)
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name, req.model_spec.signature_name = "default", "classify_x_to_y"
    req.input.example_list.examples.append(ex)
    resp = env["predict"].Classify(req, timeout=10)
    assert [(c.label, c.score) for c in resp.result.classifications[0].classes] == [("", 3.0)]
    assert resp.model_spec.version.value == 123
    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name, rreq.model_spec.signature_name = "default", "regress_x_to_y"
    rreq.input.example_list.examples.append(ex)
    assert [r.value for r in env["predict"].Regress(rreq, timeout=10).result.regressions] == [3.0]
    mreq = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_y", "tensorflow/serving/classify"), ("regress_x_to_y", "tensorflow/serving/regress")):
        mreq.tasks.add(method_name=method).model_spec.CopyFrom(req.model_spec)
        mreq.tasks[-1].model_spec.signature_name = sig
    mreq.input.example_list.examples.append(ex)
    results = env["predict"].MultiInference(mreq, timeout=10).results
    assert results[0].classification_result.classifications[0].classes[0].score == 3.0
    assert results[1].regression_result.regressions[0].value == 3.0
    # Regress on a predict signature: TF Serving's INVALID_ARGUMENT; by default (no method check, as TF Serving)
    # the signature's shape is what is wrong, with --enable_signature_method_name_check its method_name
    rreq.model_spec.signature_name = "serving_default"
    with pytest.raises(grpc.RpcError) as info:
        env["predict"].Regress(rreq, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("No regression inputs found in SignatureDef: ")
    env["server"].cfg.signature_method_name_check = True  # read per request
    try:
        with pytest.raises(grpc.RpcError) as info:
            env["predict"].Regress(rreq, timeout=10)
    finally:
        env["server"].cfg.signature_method_name_check = False
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/predict"


def test_classify_images_sent_as_b64_bytes(env):
    x = env["x"]
    examples = [{"images": {"b64": base64.b64encode(img.tobytes()).decode()}} for img in x]
    status, answer = call(env, "/v1/models/ensemble:classify", {"examples": examples})
    assert status == 200
    want = in_process(env["shared"]["ensemble"], x)["probabilities"]
    scores = np.array([[score for _label, score in row] for row in answer["results"]])
    assert [label for label, _s in answer["results"][0]] == [str(i) for i in range(10)]
    assert np.abs(scores - want).max() < 1e-6


def test_prometheus_metrics_on_the_rest_port(env):
    still_serving(env)
    with urllib.request.urlopen(env["url"] + "/monitoring/prometheus/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert ':tensorflow:serving:request_latency_count{model_name="ensemble",API="predict",entrypoint="REST"}' in text


# ------------------------------------------------------------------------------------------------ bad input
def _image(rows=8):
    return [[[0]] * 8 for _ in range(rows)]


BAD = [
    ("malformed JSON", "/v1/models/ensemble:predict", b'{"instances": [1,', 400, "JSON Parse error: "),
    ("empty body", "/v1/models/ensemble:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("not an object", "/v1/models/ensemble:predict", b"[1]", 400, "JSON Value: [1] Is not object"),
    ("instances and inputs", "/v1/models/ensemble:predict", {"instances": [_image()], "inputs": [_image()]}, 400,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ("neither", "/v1/models/ensemble:predict", {"rows": []}, 400, "Missing 'inputs' or 'instances' key"),
    ("ragged rows", "/v1/models/ensemble:predict", {"instances": [_image(), _image(7)]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 64 but got: 56"),
    ("ragged inside", "/v1/models/ensemble:predict", {"inputs": [[[[0]] * 8] * 7 + [[[0]] * 5]]}, 400,
     "Encountered list at unexpected size: 5 at level: 2 expected size: 8"),
    ("float for uint8", "/v1/models/ensemble:predict", {"inputs": [[[[0.5]] * 8] * 8]}, 400,
     "JSON Value: 0.5 Type: Number is not of expected type: uint8"),
    ("text for uint8", "/v1/models/ensemble:predict", {"instances": [[[["a"]] * 8] * 8]}, 400,
     'JSON Value: "a" Type: String is not of expected type: uint8'),
    ("wrong shape", "/v1/models/ensemble:predict", {"instances": [[1, 2, 3]]}, 400,
     "input 'images': expected shape [?,8,8,1], received [1,3]"),
    ("unknown model", "/v1/models/nope:predict", {"instances": [_image()]}, 404, "Servable not found for request: Latest(nope)"),
    ("unknown version", "/v1/models/ensemble/versions/7:predict", {"instances": [_image()]}, 404,
     "Servable not found for request: Specific(ensemble, 7)"),
    ("unknown label", "/v1/models/ensemble/labels/prod:predict", {"instances": [_image()]}, 400,
     "Unrecognized servable version label: prod"),
    ("unknown signature", "/v1/models/ensemble:predict", {"signature_name": "nope", "instances": [_image()]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("b64 that does not decode", "/v1/models/ensemble:classify", {"examples": [{"images": {"b64": "#not base64#"}}]}, 400,
     "Unable to base64 decode"),
    ("examples missing", "/v1/models/default:regress", {"signature_name": "regress_x_to_y"}, 400,
     "When method is classify, key 'examples' is expected and was not found"),
    ("lists nested 900 deep", "/v1/models/ensemble:predict", b'{"inputs": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}", 400,
     "input 'images': lists nested 900 deep; this server takes tensors of rank 64 at most"),
    ("JSON nested 5000 deep", "/v1/models/ensemble:predict", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400,
     "JSON Parse error: the document nests too deeply"),
    ("unknown verb", "/v1/models/ensemble:explain", {"instances": []}, 400, "Malformed request: POST /v1/models/ensemble:explain"),
]


@pytest.mark.parametrize("path, body, status, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_get_tf_servings_status_and_text(env, path, body, status, message):
    got_status, answer = call(env, path, body)
    assert got_status == status and message in answer["error"], answer
    still_serving(env)


def test_the_shape_error_has_the_grpc_wording(env):
    """One home for the wording: REST and gRPC say the same of the same wrong tensor."""
    from tensorflow_serving.apis import predict_pb2

    from serving.tensors import from_ndarray

    wrong = np.zeros((2, 8, 8), dtype=np.uint8)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "ensemble"
    req.inputs["images"].CopyFrom(from_ndarray(wrong))
    with pytest.raises(grpc.RpcError) as info:
        env["predict"].Predict(req, timeout=10)
    status, answer = call(env, "/v1/models/ensemble:predict", {"inputs": wrong.tolist()})
    assert status == 400 and answer["error"] == info.value.details()


def test_an_oversized_body_gets_413_and_the_limit(env):
    big = {"instances": [_image()] * 2000}
    status, answer = call(env, "/v1/models/ensemble:predict", big)
    assert status == 413
    assert f"above this server's limit of {MAX_BODY} bytes" in answer["error"] and "--rest-api-max-body-mb" in answer["error"]
    still_serving(env)


def test_unknown_paths_and_methods(env):
    assert call(env, "/v2/models/ensemble")[0] == 404
    assert call(env, "/v1/models/ensemble", method="DELETE") == (400, {"error": "Malformed request: DELETE /v1/models/ensemble"})


# ------------------------------------------------------------------------------------------------ fuzz
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=5))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=40)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.fixed_dictionaries({}, optional={"instances": _json, "inputs": _json, "signature_name": _json, "examples": _json,
                                        "context": _json}).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, verb=st.sampled_from(["predict", "classify", "regress"]), model=st.sampled_from(["ensemble", "default"]))
def test_fuzzed_bodies_never_break_the_server(env, body, verb, model):
    status, answer = call(env, f"/v1/models/{model}:{verb}", body)
    assert status in (200, 400, 404), answer
    if status != 200:
        assert isinstance(answer["error"], str) and answer["error"]


def test_fuzzing_left_the_server_serving(env):
    still_serving(env)
    assert env["server"].metrics.request_count("ensemble", "INTERNAL") == 0


# ------------------------------------------------------------------------------------------------ the CLI
def test_jobctl_predict_over_rest(env, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    x = env["x"]
    npz = tmp_path / "x.npz"
    np.savez(npz, x_test=x, y_test=np.array([0, 1, 2]))
    runner = CliRunner()
    r = runner.invoke(app, ["predict", "--npz", str(npz), "--rest", env["url"], "--model", "ensemble", "--json", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    want = in_process(env["shared"]["ensemble"], x)["probabilities"]
    assert [p["top_k"][0]["class_id"] for p in out["predictions"]] == want.argmax(-1).tolist()
    assert out["predictions"][0]["top_k"][0]["class_name"] == str(int(want[0].argmax()))
    r = runner.invoke(app, ["predict", "--npz", str(npz), "--rest", env["url"], "--model", "nope"])
    assert r.exit_code == 2 and "HTTP 404: Servable not found for request: Latest(nope)" in r.output


def test_rest_and_grpc_share_the_batch_queue(tmp_path):
    """With batching (the asyncio gRPC transport), REST requests wait in the same queue as gRPC ones and each
    gets its own rows back."""
    from concurrent.futures import ThreadPoolExecutor

    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.model_servers.config import BatchingConfig, ServerConfig
    from serving.model_servers.server import ModelServer
    from serving.tensors import from_ndarray, to_ndarray

    shared = shared_models()
    copy_version(shared["ensemble"], tmp_path / "ensemble", 1)
    server = ModelServer(ServerConfig("ensemble", tmp_path / "ensemble", port=0, host="127.0.0.1", poll_seconds=3600, rest_api_port=0,
                                      batching=BatchingConfig(True, max_batch_size=16, batch_timeout_micros=20_000))).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        assert server.asyncio
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        x = shared["data"][2][:16]
        want = in_process(shared["ensemble"], x)["probabilities"]
        local = {"url": f"http://127.0.0.1:{server.rest_port}"}

        def one(i):
            if i % 2:
                status, answer = call(local, "/v1/models/ensemble:predict", {"instances": x[i : i + 1].tolist()})
                assert status == 200
                return np.array(answer["predictions"][0]["probabilities"])
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "ensemble"
            req.inputs["images"].CopyFrom(from_ndarray(x[i : i + 1]))
            return to_ndarray(stub.Predict(req, timeout=30).outputs["probabilities"])[0]

        with ThreadPoolExecutor(16) as pool:
            got = np.stack(list(pool.map(one, range(len(x)))))
        assert np.abs(got - want).max() < 1e-6
        text = server.metrics.text()
        examples = float(text.split('jobctl_serving_batch_size_sum{model="ensemble",version="1"} ')[1].split()[0])
        calls = float(text.split('jobctl_serving_batch_size_count{model="ensemble",version="1"} ')[1].split()[0])
        assert examples == len(x)  # every example went through the model once
        assert calls < len(x)  # and some went together
    finally:
        channel.close()
        server.stop(grace=1)


def test_http_chunked_bodies_pipelining_and_garbage(env):
    import socket

    port = int(env["url"].rsplit(":", 1)[1])
    body = json.dumps({"instances": env["x"][:1].tolist()}).encode()

    def exchange(raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(raw)
            data = b""
            while chunk := s.recv(1 << 16):
                data += chunk
        return data

    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100]) for i in range(0, len(body), 100)) + b"0\r\n\r\n"
    answer = exchange(b"POST /v1/models/ensemble:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b'"predictions"' in answer
    two = exchange(b"GET /v1/models/ensemble HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models/ensemble HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 OK") == 2  # keep-alive: both answered on one connection, in order
    garbage = exchange(b"HELLO\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 Bad Request") and b"malformed HTTP request line: 'HELLO'" in garbage
    still_serving(env)


def test_curl_with_expect_100_continue_is_refused_before_it_sends(env, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"instances": [_image()] * 6000}))  # above 1 MB: curl asks first (Expect: 100-continue)
    run = subprocess.run(["curl", "-s", "-w", " %{http_code}", f"{env['url']}/v1/models/ensemble:predict", "--data-binary", f"@{big}"],
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.endswith(" 413") and f"limit of {MAX_BODY} bytes" in run.stdout
    still_serving(env)


def test_a_rest_request_in_flight_at_shutdown_is_answered(tmp_path):
    import threading
    import time

    from serving.model_servers.config import BatchingConfig, ServerConfig
    from serving.model_servers.server import ModelServer

    shared = shared_models()
    copy_version(shared["ensemble"], tmp_path / "ensemble", 1)
    server = ModelServer(ServerConfig("ensemble", tmp_path / "ensemble", port=0, host="127.0.0.1", poll_seconds=3600, rest_api_port=0,
                                      batching=BatchingConfig(True, max_batch_size=64, batch_timeout_micros=1_500_000))).start()
    local, result = {"url": f"http://127.0.0.1:{server.rest_port}"}, {}
    t = threading.Thread(target=lambda: result.update(answer=call(local, "/v1/models/ensemble:predict", {"instances": shared["data"][2][:2].tolist()})))
    t.start()
    time.sleep(0.5)  # the request now waits 1.5 s in the batch queue
    server.stop(grace=10)
    t.join(timeout=30)
    status, answer = result["answer"]
    assert status == 200 and len(answer["predictions"]) == 2
