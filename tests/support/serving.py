"""Tiny digits classifiers exported per the model contract (docs/ARCHITECTURE.md), for the serving tests.

Kept independent of jobs/export.py so serving tests do not break while training code changes; the layout and
signature are the contract both follow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CLASS_NAMES = [str(i) for i in range(10)]


def digits(seed: int = 0):
    """sklearn digits as uint8 NHWC (pixels 0..16): (x_train, y_train, x_test, y_test)."""
    from jobs.datasets.digits import digits_arrays  # the same arrays as load_digits(), without importing scikit-learn

    images, target = digits_arrays()
    x = images.astype(np.uint8)[..., None]
    y = target.astype(np.int64)
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    cut = int(len(x) * 0.8)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def export_tiny_model(
    base: Path,
    *,
    seed: int = 0,
    hidden: int = 16,
    epochs: int = 2,
    kind: str = "mlp",
    input_shape=(8, 8, 1),
    num_classes: int = 10,
    class_names=None,
    input_dtype: str = "uint8",
    version: int = 1,
    data=None,
) -> Path:
    """Train (briefly) and export `<base>/<version>/`; returns the version directory."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    layers = [keras.Input(input_shape), keras.layers.Rescaling(1.0 / 16.0)]
    if kind == "cnn":
        layers += [keras.layers.Conv2D(8, 3, padding="same", activation="relu"), keras.layers.Flatten()]
    else:
        layers += [keras.layers.Flatten()]
    layers += [keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(num_classes)]
    model = keras.Sequential(layers)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if epochs and data is not None:
        x, y = data[0], data[1]
        model.fit(x.astype("float32"), y, epochs=epochs, batch_size=64, verbose=0)

    class Servable(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.model = m

        @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.as_dtype(input_dtype), name="images")])
        def serve(self, images):
            probs = tf.nn.softmax(self.model(tf.cast(images, tf.float32), training=False), axis=-1)
            return {"probabilities": probs, "class_ids": tf.argmax(probs, axis=-1, output_type=tf.int64)}

    servable = Servable(model)
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    tf.saved_model.save(servable, str(tmp), signatures={"serving_default": servable.serve})
    meta = {
        "model_name": base.name, "version": version, "class_names": list(class_names or CLASS_NAMES[:num_classes]),
        "input_name": "images", "input_shape": list(input_shape), "input_dtype": input_dtype, "pixel_max": 16.0,
    }
    (tmp / "jobctl.json").write_text(json.dumps(meta))
    final = base / str(version)
    if final.exists():
        shutil.rmtree(final)
    os.chmod(tmp, 0o755)
    os.rename(tmp, final)
    return final


def copy_version(src: Path, base: Path, version: int) -> Path:
    """Publish a copy of a version directory atomically under a new number (what an exporter does)."""
    Path(base).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=base))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    final = Path(base) / str(version)
    os.rename(tmp, final)
    return final


def in_process(path, x) -> dict:
    """The model's serving_default outputs for `x`, computed in this process (the reference gRPC answers match)."""
    from serving import savedmodel

    model = savedmodel.load(path)
    return savedmodel.call(model.signatures["serving_default"], {"images": x})


def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for localhost and 127.0.0.1 under `tmp_path`; skips the test without openssl."""
    import pytest

    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    cert, key = Path(tmp_path) / "cert.pem", Path(tmp_path) / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


_SHARED: dict = {}


def shared_models() -> dict:
    """Built once per test process (several test modules use them): three digits members of different
    architectures, their ensemble, and the test split. Removed at interpreter exit."""
    if _SHARED:
        return _SHARED
    import atexit

    root = Path(tempfile.mkdtemp(prefix="jobctl-serving-tests-"))
    atexit.register(shutil.rmtree, root, True)
    data = digits()
    members = [
        export_tiny_model(root / "models" / "mlp16", seed=1, hidden=16, epochs=3, data=data),
        export_tiny_model(root / "models" / "mlp32", seed=2, hidden=32, epochs=3, data=data),
        export_tiny_model(root / "models" / "cnn", seed=3, hidden=16, epochs=2, kind="cnn", data=data),
    ]
    from serving.ensemble import build_ensemble

    ensemble = build_ensemble(members, root / "models" / "ensemble", weights=[1, 1, 2])
    _SHARED.update(root=root, data=data, members=members, ensemble=ensemble)
    return _SHARED


def export_half_plus_two(base: Path, version: int = 1) -> Path:
    """A model like TF Serving's half_plus_two test model (y = 0.5 x + 2) with its four signatures: serving_default
    (predict, float input `x` [?, 1]), classify_x_to_y (classify: serialized tf.Examples with feature `x`, output
    `scores`), regress_x_to_y (regress, output `outputs`). TF2 exports every signature as predict, so the
    method names are set in saved_model.pb afterwards, as TF1's signature_def builders would have written them."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict(self, x):
            return {"y": 0.5 * x + 2.0}

        def _parse(self, inputs):
            return tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            return {"scores": 0.5 * self._parse(inputs) + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": 0.5 * self._parse(inputs) + 2.0}

    module = HalfPlusTwo()
    out = Path(base) / str(version)
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.predict, "classify_x_to_y": module.classify,
                                                      "regress_x_to_y": module.regress})
    pb = out / "saved_model.pb"
    sm = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    for mg in sm.meta_graphs:
        mg.signature_def["classify_x_to_y"].method_name = "tensorflow/serving/classify"
        mg.signature_def["regress_x_to_y"].method_name = "tensorflow/serving/regress"
    pb.write_bytes(sm.SerializeToString())
    return out
