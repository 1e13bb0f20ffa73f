"""jobctl_client's stubs: regenerating them from the vendored schema gives the files in the repository, that schema
is the one the pinned tensorflow-serving-api and tensorflow wheels carry, and the stubs load beside TensorFlow's
own and speak the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"
VENDORED = CLIENT / "jobctl_client" / "protos"


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.py"))}


def test_regenerating_the_stubs_gives_the_vendored_files(tmp_path):
    out = tmp_path / "protos"
    proc = subprocess.run([sys.executable, str(CLIENT / "scripts" / "generate_stubs.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    generated, vendored = _tree(out), _tree(VENDORED)
    vendored.pop("__init__.py")  # the hand-written package module (the pool); the script keeps it
    assert sorted(generated) == sorted(vendored), "run `python client/scripts/generate_stubs.py`"
    stale = [name for name in generated if generated[name] != vendored[name]]
    assert not stale, f"stale generated stubs {stale}: run `python client/scripts/generate_stubs.py`"


@pytest.mark.slow
def test_the_vendored_schema_is_the_pinned_wheels():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(CLIENT / "scripts" / "extract_descriptors.py"), "--check"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:] + "\nrun `python client/scripts/extract_descriptors.py`"


@pytest.mark.slow
def test_both_sets_of_stubs_load_in_one_process_and_speak_the_same_bytes():
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2 as tf_metadata
    from tensorflow_serving.apis import predict_pb2 as tf_predict

    from jobctl_client.protos.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
    from jobctl_client.tensors import from_ndarray, to_ndarray

    assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == tf_predict.PredictRequest.DESCRIPTOR.full_name
    assert predict_pb2.PredictRequest is not tf_predict.PredictRequest  # two pools, no clash
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    mine = predict_pb2.PredictRequest()
    mine.model_spec.name, mine.model_spec.version.value = "m", 7
    mine.inputs["x"].CopyFrom(from_ndarray(x))
    theirs = tf_predict.PredictRequest()
    theirs.model_spec.name, theirs.model_spec.version.value = "m", 7
    theirs.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    assert mine.SerializeToString() == theirs.SerializeToString()
    # TensorFlow's typed-value form (a scalar fill, int64s) decodes as TensorFlow decodes it
    for value in (tf.make_tensor_proto(3.5, shape=[2, 2]), tf.make_tensor_proto(np.arange(6, dtype=np.int64)),
                  tf.make_tensor_proto([b"a", b"bc"])):
        decoded = to_ndarray(predict_pb2.PredictRequest.FromString(
            tf_predict.PredictRequest(inputs={"v": value}).SerializeToString()).inputs["v"])
        np.testing.assert_array_equal(decoded, tf.make_ndarray(value))
    # google.protobuf.Any in GetModelMetadata unpacks across the two
    defs = tf_metadata.SignatureDefMap()
    defs.signature_def["s"].method_name = "tensorflow/serving/predict"
    response = tf_metadata.GetModelMetadataResponse()
    response.metadata["signature_def"].Pack(defs)
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        response.SerializeToString()).metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["s"].method_name == "tensorflow/serving/predict"
