"""TF Serving's model-server integration cases, run against `jobctl serve` processes started with TF Serving's
command line.

Each test is one case of tensorflow/serving's tensorflow_model_server_test.py (commit
9d981c5c2708d23c5407c7c1e30309e6f9798874), named after it, sending the same requests and expecting the same
answers; tests/tfserving/CASES.md lists every upstream case and what became of it. The models are built at test
time by tests/support/tfserving_models.py. All servers start together when the module starts (their TensorFlow
imports overlap) and stop when it ends; each test waits only for the server it uses.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest

from tests.support import tfserving_models as models
from tests.support.tfserving import RPC_TIMEOUT, call_rest, start_server, stop_all

pytestmark = pytest.mark.slow

VERSION = models.VERSION
CHANNEL_ARGUMENTS = "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb"  # testGoodGrpcChannelArgs'


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfserving")
    keras = models.start_keras_models(root / "keras")  # the slowest build, in the background from the start
    m = SimpleNamespace(
        half_plus_two=root / "saved_model_half_plus_two_cpu",
        half_plus_two_tf2=root / "saved_model_half_plus_two_tf2_cpu",
        half_plus_three=root / "saved_model_half_plus_three",
        tf_saved_model_save=root / "tf_saved_model_save",
        multiple_signatures=root / "tf_saved_model_save_multiple_signatures",
        sequential=root / "keras" / "sequential",
        distrat=root / "keras" / "distrat",
    )
    models.half_plus_two_tf1(m.half_plus_two)
    models.half_plus_two_tf2(m.half_plus_two_tf2)
    models.half_plus_three_tf1(m.half_plus_three)
    models.tf_saved_model_save(m.tf_saved_model_save)
    models.tf_saved_model_save_multiple_signatures(m.multiple_signatures)
    for base in (m.sequential, m.distrat):  # served before the child writes their version: loaded when it lands
        base.mkdir(parents=True, exist_ok=True)

    files = SimpleNamespace(good_config=root / "good_model_config.conf", bad_config=root / "bad_model_config.txt",
                            batching=root / "batching_config.txt", monitoring=root / "monitoring_config.txt",
                            reload=root / "reload" / "model_config.txt", reload_zero=root / "reload0" / "model_config.txt")
    files.good_config.write_text(models.model_config({"half_plus_two": m.half_plus_two,
                                                      "half_plus_three": m.half_plus_three}))
    files.bad_config.write_text(models.BAD_MODEL_CONFIG)
    files.batching.write_text(models.BATCHING_PARAMETERS)
    files.monitoring.write_text(models.MONITORING_CONFIG)
    for path in (files.reload, files.reload_zero):
        path.parent.mkdir()
        path.write_text(models.model_config({"half_plus_two": m.half_plus_two}))

    start = lambda **flags: start_server(root, **flags)  # noqa: E731
    default = lambda base, **flags: start(models=("default",), model_name="default", model_base_path=base, **flags)  # noqa: E731
    servers = {
        # testPrometheusEndpoint's and testGoodGrpcChannelArgs' flags on the server of every half_plus_two case:
        # one TensorFlow process instead of three on two cores (CASES.md)
        "half_plus_two": default(m.half_plus_two, monitoring_config_file=files.monitoring,
                                 grpc_channel_arguments=CHANNEL_ARGUMENTS),
        "half_plus_two_tf2": default(m.half_plus_two_tf2),
        "batching": default(m.half_plus_two, batching_parameters_file=files.batching),
        "good_config": start(models=("half_plus_two", "half_plus_three"), model_config_file=files.good_config),
        "reload": start(models=("half_plus_two",), model_config_file=files.reload, model_config_file_poll_wait_seconds=1),
        "reload_zero": start(models=("half_plus_two",), model_config_file=files.reload_zero,
                             model_config_file_poll_wait_seconds=0),
        "tf_saved_model_save": default(m.tf_saved_model_save),
        "multiple_signatures": default(m.multiple_signatures),
        "sequential": default(m.sequential),
        "distrat": default(m.distrat),
    }
    yield SimpleNamespace(root=root, models=m, files=files, servers=servers, keras=keras)
    stop_all(servers.values())
    if keras.poll() is None:
        keras.kill()
    keras.wait(timeout=30)


def server(env, name: str):
    return env.servers[name].ready()


def rest_url(env, name: str, path: str) -> str:
    return f"http://{server(env, name).rest_address}{path}"


def prediction_stub(address: str):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(address))


def assert_model_spec(spec, name: str, signature_name: str, version: int = VERSION) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


def verify_predict(address: str, expected_output: float, *, model_name: str = "default", specify_output: bool = True,
                   batch_input: bool = False, signature_name: str = "serving_default") -> None:
    """TF Serving's test base's Predict check: x = 2.0 of shape [1] (or [1, 1] with batch_input), optionally
    asking for output y only; the answer has exactly one float y equal to `expected_output`."""
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    x = request.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.float_val.append(2.0)
    x.tensor_shape.dim.add().size = 1
    if batch_input:
        x.tensor_shape.dim.add().size = 1
    if specify_output:
        request.output_filter.append("y")
    result = prediction_stub(address).Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [expected_output]
    assert_model_spec(result.model_spec, model_name, signature_name)


def example_input(request) -> None:
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(2.0)


SERVER_OF_FLAVOUR = {"tf1": "half_plus_two", "tf2": "half_plus_two_tf2"}


# upstream: testGetModelStatus
def test_get_model_status(env):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server(env, "half_plus_two").grpc_address))
    result = stub.GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == VERSION
    assert result.model_version_status[0].status.error_code == 0  # OK


def signature_def_map(version_dir: Path):
    """The SignatureDefMap TF Serving answers for a model: its `serve` MetaGraphDef's signature_def, verbatim."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
    (meta_graph,) = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
    defs = get_model_metadata_pb2.SignatureDefMap()
    for key, value in meta_graph.signature_def.items():
        defs.signature_def[key].CopyFrom(value)
    return defs


# upstream: testGetModelMetadata
def test_get_model_metadata(env):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = prediction_stub(server(env, "half_plus_two").grpc_address).GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == VERSION
    assert list(result.metadata) == ["signature_def"]
    answered = get_model_metadata_pb2.SignatureDefMap()
    assert result.metadata["signature_def"].Unpack(answered)
    assert answered == signature_def_map(env.models.half_plus_two / models.VERSION_DIR)


# upstream: testClassify, testClassifyTf2
@pytest.mark.parametrize("flavour", ["tf1", "tf2"])
def test_classify(env, flavour):
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example_input(request)
    result = prediction_stub(server(env, SERVER_OF_FLAVOUR[flavour]).grpc_address).Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert_model_spec(result.model_spec, "default", "classify_x_to_y")


# upstream: testRegress, testRegressTf2
@pytest.mark.parametrize("flavour", ["tf1", "tf2"])
def test_regress(env, flavour):
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example_input(request)
    result = prediction_stub(server(env, SERVER_OF_FLAVOUR[flavour]).grpc_address).Regress(request, RPC_TIMEOUT)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    assert_model_spec(result.model_spec, "default", "regress_x_to_y")


# upstream: testMultiInference, testMultiInferenceTf2
@pytest.mark.parametrize("flavour", ["tf1", "tf2"])
def test_multi_inference(env, flavour):
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", models.REGRESS), ("classify_x_to_y", models.CLASSIFY)):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = method
    example_input(request)
    result = prediction_stub(server(env, SERVER_OF_FLAVOUR[flavour]).grpc_address).MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for answer, task in zip(result.results, request.tasks):
        assert_model_spec(answer.model_spec, "default", task.model_spec.signature_name)


# upstream: testPredictSavedModel (the test base's _TestPredict)
def test_predict_saved_model(env):
    address = server(env, "half_plus_two").grpc_address
    verify_predict(address, 3.0)
    verify_predict(address, 3.0, specify_output=False)


# upstream: the test base's _TestPredict with a batching parameters file (its caller went with SessionBundle)
def test_predict_batching_saved_model(env):
    address = server(env, "batching").grpc_address
    verify_predict(address, 3.0)
    verify_predict(address, 3.0, specify_output=False)


# upstream: testGoodModelConfig
def test_good_model_config(env):
    address = server(env, "good_config").grpc_address
    for name, expected in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        verify_predict(address, expected, model_name=name)
        verify_predict(address, expected, model_name=name, specify_output=False)


# upstream: testBadModelConfig
def test_bad_model_config(env):
    bad = start_server(env.root, model_config_file=env.files.bad_config, stderr=subprocess.PIPE)
    try:
        _, stderr = bad.proc.communicate(timeout=120)
    finally:
        bad.stop()
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in stderr
    assert bad.proc.returncode == 2  # jobctl's exit code for bad input (TF Serving's process exits too)


def wait_for_model(address: str, name: str, seconds: float) -> None:
    """Until `name` has an AVAILABLE version or `seconds` pass (upstream sleeps the whole time)."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        try:
            if any(s.state == 30 for s in stub.GetModelStatus(request, RPC_TIMEOUT).model_version_status):
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)


# upstream: testModelConfigReload
def test_model_config_reload(env):
    address = server(env, "reload").grpc_address
    verify_predict(address, 3.0, model_name="half_plus_two", specify_output=False)
    env.files.reload.write_text(models.model_config({"half_plus_three": env.models.half_plus_three}))
    wait_for_model(address, "half_plus_three", 30)  # polled every 1 s; upstream waits 10 s on an idle machine
    verify_predict(address, 4.0, model_name="half_plus_three", specify_output=False)


# upstream: testModelConfigReloadWithZeroPollPeriod
def test_model_config_reload_with_zero_poll_period(env):
    address = server(env, "reload_zero").grpc_address
    verify_predict(address, 3.0, model_name="half_plus_two", specify_output=False)
    env.files.reload_zero.write_text(models.model_config({"half_plus_three": env.models.half_plus_three}))
    time.sleep(0 + 1)  # poll period + 1 s, as upstream: time enough to reload, were it polling
    verify_predict(address, 3.0, model_name="half_plus_two", specify_output=False)


# upstream: testGoodGrpcChannelArgs
def test_good_grpc_channel_args(env):
    verify_predict(server(env, "half_plus_two").grpc_address, 3.0, specify_output=False)


# upstream: testClassifyREST
def test_classify_rest(env):
    answer = call_rest(rest_url(env, "half_plus_two", "/v1/models/default:classify"),
                       {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert answer == {"results": [[["", 3.0]]]}


# upstream: testRegressREST
def test_regress_rest(env):
    answer = call_rest(rest_url(env, "half_plus_two", "/v1/models/default:regress"),
                       {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert answer == {"results": [3.0]}


# upstream: testPredictREST (x of shape [3] for a [?,1] signature: answered, as TF Serving's session does)
def test_predict_rest(env):
    answer = call_rest(rest_url(env, "half_plus_two", "/v1/models/default:predict"), {"instances": [2.0, 3.0, 4.0]})
    assert answer == {"predictions": [3.0, 3.5, 4.0]}


# upstream: testPredictColumnarREST
def test_predict_columnar_rest(env):
    answer = call_rest(rest_url(env, "half_plus_two", "/v1/models/default:predict"), {"inputs": [2.0, 3.0, 4.0]})
    assert answer == {"outputs": [3.0, 3.5, 4.0]}


# upstream: testGetStatusREST
def test_get_status_rest(env):
    assert call_rest(rest_url(env, "half_plus_two", "/v1/models/default")) == {"model_version_status": [{
        "version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


# upstream: testGetModelMetadataREST
def test_get_model_metadata_rest(env):
    from google.protobuf.json_format import MessageToDict

    answer = call_rest(rest_url(env, "half_plus_two", "/v1/models/default/metadata"))
    defs = signature_def_map(env.models.half_plus_two / models.VERSION_DIR)
    expected_defs = MessageToDict(defs, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
    assert answer == {"model_spec": {"name": "default", "signature_name": "", "version": "123"},
                      "metadata": {"signature_def": expected_defs}}
    # what TF Serving's own expected JSON for half_plus_two says, spelled out
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2",
                               "regress_x2_to_y3"}
    rows = {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
                                                  "unknown_rank": False}}
    examples = {"dtype": "DT_STRING", "tensor_shape": {"dim": [], "unknown_rank": True}, "name": "tf_example:0"}
    assert signatures["serving_default"] == {"inputs": {"x": {**rows, "name": "x:0"}},
                                             "outputs": {"y": {**rows, "name": "y:0"}},
                                             "method_name": models.PREDICT, "defaults": {}}
    assert signatures["classify_x_to_y"] == {"inputs": {"inputs": examples}, "outputs": {"scores": {**rows, "name": "y:0"}},
                                             "method_name": models.CLASSIFY, "defaults": {}}
    for key, inputs, output in (("regress_x_to_y", examples, "y:0"), ("regress_x_to_y2", examples, "y2:0"),
                                ("regress_x2_to_y3", {**rows, "name": "x2:0"}, "y3:0")):
        assert signatures[key] == {"inputs": {"inputs": inputs}, "outputs": {"outputs": {**rows, "name": output}},
                                   "method_name": models.REGRESS, "defaults": {}}


# upstream: testPrometheusEndpoint
def test_prometheus_endpoint(env):
    from urllib import request

    with request.urlopen(rest_url(env, "half_plus_two", models.PROMETHEUS_PATH), timeout=20) as response:
        assert "# TYPE" in response.read().decode()


# upstream: testPredictUDS
def test_predict_uds(env):
    verify_predict("unix:" + server(env, "half_plus_two").socket_path, 3.0, specify_output=False)


# upstream: test_tf_saved_model_save (y = 3 * 2 * x)
def test_tf_saved_model_save(env):
    verify_predict(server(env, "tf_saved_model_save").grpc_address, 12.0, specify_output=False)


# upstream: test_tf_saved_model_save_multiple_signatures
def test_tf_saved_model_save_multiple_signatures(env):
    address = server(env, "multiple_signatures").grpc_address
    verify_predict(address, 2.0, signature_name="custom_signature_key")
    verify_predict(address, 1.0)


# upstream: test_sequential_keras_saved_model_save, test_distrat_sequential_keras_saved_model_save
@pytest.mark.parametrize("kind", ["sequential", "distrat"])
def test_sequential_keras_saved_model_save(env, kind):
    env.keras.wait(timeout=300)
    assert env.keras.returncode == 0, (env.root / "keras" / "build.log").read_text()[-3000:]
    verify_predict(server(env, kind).grpc_address, 2.0, batch_input=True, specify_output=False)
