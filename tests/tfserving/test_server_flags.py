"""The TF Serving behaviours `jobctl serve` gained for TF Serving's own tests, beyond what those tests check:
config reload (a dropped model goes, a broken file changes nothing), TF Serving's flag checks, TF1 models fed
outside their declared shapes, batches of requests whose shapes cannot be concatenated. In process, real gRPC."""

from __future__ import annotations

import shutil
import threading

import grpc
import numpy as np
import pytest

from tests.support import tfserving_models

pytestmark = pytest.mark.slow

CONFIG = 'model_config_list: {{ config: {{ name: "{name}", base_path: "{path}", model_platform: "tensorflow" }} }}'


@pytest.fixture(scope="module")
def tf_models(tmp_path_factory):
    """half_plus_two and half_plus_three (TF1), generated as in tests/support/tfserving_models.py."""
    root = tmp_path_factory.mktemp("tf_models")
    tfserving_models.half_plus_two_tf1(root / "half_plus_two")
    tfserving_models.half_plus_three_tf1(root / "half_plus_three")
    return {"half_plus_two": root / "half_plus_two", "half_plus_three": root / "half_plus_three"}


def predict(stub, model, x):
    from tensorflow_serving.apis import predict_pb2

    from serving.tensors import from_ndarray, to_ndarray

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.inputs["x"].CopyFrom(from_ndarray(np.asarray(x, np.float32)))
    response = stub.Predict(req, timeout=20)
    return to_ndarray(response.outputs["y"], "y"), response.model_spec.version.value


@pytest.fixture()
def served(tmp_path, tf_models):
    """A server started from a model config file naming half_plus_two (no polling: the test polls)."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.model_servers.config import ServerConfig, read_model_config
    from serving.model_servers.config_watcher import ConfigWatcher
    from serving.model_servers.server import ModelServer

    config = tmp_path / "models.config"
    config.write_text(CONFIG.format(name="half_plus_two", path=tf_models["half_plus_two"]))
    cfg = ServerConfig(model_name="", base_path=tmp_path, port=0, host="127.0.0.1", extra_models=read_model_config(config),
                       model_config_file=config)
    server = ModelServer(cfg).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield {"server": server, "config": config, "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
           "watcher": ConfigWatcher(server, config, period=3600)}
    channel.close()
    server.stop(grace=0)


def test_config_reload_swaps_models_and_a_broken_file_changes_nothing(served, tf_models):
    stub, watcher, config = served["stub"], served["watcher"], served["config"]
    watcher.start()  # reads the file as it is now; polling is driven by hand below
    assert predict(stub, "half_plus_two", [[2.0]]) == (np.array([[3.0]], np.float32), 123)

    config.write_text(CONFIG.format(name="half_plus_three", path=tf_models["half_plus_three"]))
    watcher.poll_once()
    y, version = predict(stub, "half_plus_three", [[2.0]])
    assert (y, version) == (np.array([[4.0]], np.float32), 123)
    with pytest.raises(grpc.RpcError) as gone:  # dropped from the file: unloaded, as TF Serving's ReloadConfig
        predict(stub, "half_plus_two", [[2.0]])
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(half_plus_two)" in gone.value.details()

    config.write_text("model_config_list: { config: { name: ")  # half-written, or a typo
    watcher.poll_once()
    assert predict(stub, "half_plus_three", [[3.0]])[0].tolist() == [[4.5]]  # still serving the last good config
    watcher.stop()


def test_tf1_model_answers_inputs_outside_its_declared_shape(served):
    """half_plus_two declares x as [?,1]; TF Serving feeds its graph whatever arrives and answers, so must this."""
    stub = served["stub"]
    assert predict(stub, "half_plus_two", [2.0, 3.0, 4.0])[0].tolist() == [3.0, 3.5, 4.0]
    assert predict(stub, "half_plus_two", [[2.0, 4.0]])[0].tolist() == [[3.0, 4.0]]


def test_batching_parameters_file_needs_enable_batching(tmp_path, tf_models):
    """TF Serving refuses --batching_parameters_file without --enable_batching; so does `jobctl serve` (exit 2)."""
    from typer.testing import CliRunner

    from cli.main import app

    batching = tmp_path / "batching_config.txt"
    batching.write_text(tfserving_models.BATCHING_PARAMETERS)
    result = CliRunner().invoke(app, ["serve", f"--model_base_path={tf_models['half_plus_two']}",
                                      f"--batching_parameters_file={batching}"])
    assert result.exit_code == 2
    assert "--batching_parameters_file is set without --enable_batching" in result.output


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 0 }", "max_batch_size is 0; expected at least 1"),
    ("max_batch_size: 8", "Error parsing text-format tensorflow.serving.BatchingParameters"),
])
def test_bad_batching_parameters_name_the_field(tmp_path, text, message):
    from jobs.errors import BadInputError
    from serving.model_servers.config import read_batching_parameters

    path = tmp_path / "batching.config"
    path.write_text(text)
    with pytest.raises(BadInputError) as info:
        read_batching_parameters(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_batch_of_requests_with_different_row_shapes_answers_each():
    """A request outside the declared shapes (answered, as TF Serving would) must not fail its batch-mates: rows
    of different shapes cannot be concatenated, so each kind runs on its own."""
    from serving.model_servers.batching import Batcher
    from serving.model_servers.config import BatchingConfig

    calls = []

    def run(inputs):
        calls.append(inputs["x"].shape)
        return {"y": inputs["x"] * 0.5 + 2}

    # three one-row requests fill a batch of 3, so it leaves as soon as all are queued, all in it
    batcher = Batcher(run, BatchingConfig(enabled=True, max_batch_size=3, batch_timeout_micros=5_000_000))
    results = {}
    barrier = threading.Barrier(3)

    def submit(key, x):
        barrier.wait()
        results[key] = batcher.submit({"x": x}, len(x), timeout=30)["y"]

    threads = [threading.Thread(target=submit, args=(k, x)) for k, x in
               (("rows", np.array([[2.0]], np.float32)), ("flat", np.array([4.0], np.float32)),
                ("rows2", np.array([[6.0]], np.float32)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    batcher.stop()
    assert results["rows"].tolist() == [[3.0]]
    assert results["rows2"].tolist() == [[5.0]]
    assert results["flat"].tolist() == [4.0]
    assert sorted(calls) == [(1,), (2, 1)]  # the two [n,1] requests shared one call


@pytest.mark.parametrize("policy, available", [
    ("model_version_policy { specific { versions: 123 } }", [123]),
    ("model_version_policy { all { } }", [123, 124]),
    ("", [124]),  # latest 1, TF Serving's default
])
def test_model_config_version_policies_and_labels(tmp_path, tf_models, policy, available):
    """TF Serving's three version policies, and a version label from the config file."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc

    from serving.model_servers.config import ServerConfig, read_model_config
    from serving.model_servers.server import ModelServer
    from serving.tensors import from_ndarray

    base = tmp_path / "two_versions"
    for v in ("00000123", "00000124"):
        shutil.copytree(tf_models["half_plus_two"] / tfserving_models.VERSION_DIR, base / v)
    config = tmp_path / "models.config"
    label = f'version_labels {{ key: "stable" value: {available[0]} }}'
    config.write_text(f'model_config_list: {{ config: {{ name: "m", base_path: "{base}", model_platform: "tensorflow" '
                      f'{policy} {label} }} }}')
    server = ModelServer(ServerConfig(model_name="", base_path=tmp_path, port=0, host="127.0.0.1",
                                      extra_models=read_model_config(config))).start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
            get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "m"}), timeout=20)
        assert sorted(s.version for s in status.model_version_status if s.state == 30) == available
        req = predict_pb2.PredictRequest(model_spec={"name": "m", "version_label": "stable"})
        req.inputs["x"].CopyFrom(from_ndarray(np.array([[2.0]], np.float32)))
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=20)
        assert response.model_spec.version.value == available[0]
        assert list(response.outputs["y"].float_val) == [3.0]
        channel.close()
    finally:
        server.stop(grace=0)


def test_grpc_channel_arguments_parse_as_tf_serving_and_name_a_bad_item():
    from jobs.errors import BadInputError
    from serving.model_servers.config import parse_grpc_channel_arguments

    assert parse_grpc_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb") == [
        ("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "grpclb")]
    with pytest.raises(BadInputError) as info:
        parse_grpc_channel_arguments("grpc.so_reuseaddr=1,grpc.keepalive_time_ms")
    assert "--grpc_channel_arguments" in str(info.value) and "'grpc.keepalive_time_ms'" in str(info.value)


def test_tf_serving_command_line_reaches_jobctl_serve():
    """Every flag TF Serving's test base writes (tests/support/tfserving.py) is an option of `jobctl serve`, in
    TF Serving's spelling: a renamed option fails here, not as a server that will not start."""
    import typer

    from cli.main import app
    from tests.support.tfserving import tf_serving_flags

    command = typer.main.get_command(app).commands["serve"]
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    everything = dict(grpc_socket_path="/s.sock", model_config_file="/c", model_config_file_poll_wait_seconds=1,
                      monitoring_config_file="/m", batching_parameters_file="/b", grpc_channel_arguments="a=1")
    flags = tf_serving_flags(port=1, rest_api_port=2, **everything) + tf_serving_flags(
        port=1, rest_api_port=2, model_name="default", model_base_path="/p")
    assert {f.split("=", 1)[0] for f in flags} <= known
    assert "--grpc_channel_arguments=a=1,grpc.so_reuseaddr=1" in flags


def test_a_server_whose_port_was_taken_starts_again_on_fresh_ports(tmp_path, tf_models, monkeypatch):
    """The launcher's free_port() only proposes a port; when another process binds it first, the server exits
    ("address already in use") and ready() starts it again on fresh ports instead of failing the test."""
    import socket

    from tests.support import tfserving

    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    proposals = iter([taken.getsockname()[1]])
    real_free_port = tfserving.free_port
    monkeypatch.setattr(tfserving, "free_port", lambda: next(proposals, None) or real_free_port())
    try:
        server = tfserving.start_server(tmp_path, models=("half_plus_two",), model_name="half_plus_two",
                                        model_base_path=tf_models["half_plus_two"])
        first_address = server.grpc_address
        server.ready()
        assert server.grpc_address != first_address
        with grpc.insecure_channel(server.grpc_address) as channel:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert predict(stub, "half_plus_two", [[2.0]]) == (np.array([[3.0]], np.float32), 123)
        server.stop()
    finally:
        taken.close()
