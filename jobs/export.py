"""Export a trained classifier as a SavedModel in TensorFlow Serving's layout.

`<export_root>/<model_name>/<version>/` is first written as `.tmp-<version>-<random>/` in the same directory and
renamed into place, so a server polling the directory never loads half a version (TF Serving ignores directory
names that are not integers).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

from jobs.contract import (CLASS_NAMES_ASSET, INPUT_NAME, MODEL_METADATA_FILE, OUTPUT_CLASS_IDS, OUTPUT_PROBABILITIES,
                           SIGNATURE_NAME, WARMUP_FILE)
from jobs.errors import BadInputError
from jobs.fsutil import atomic_write_json


# The run metrics copied into jobctl.json, so a served model says how good it was without its run dir.
EXPORTED_METRICS = ("best_epoch", "best_val_accuracy", "best_val_loss", "test_accuracy", "test_loss")


class ExportError(BadInputError):
    """The export cannot be written where it was asked to go (a version that is taken): exit 2."""


def run_metadata(spec_hash: str, run_dir, metrics: dict) -> dict:
    """The jobctl.json fields that tie an export to the run it came from."""
    return {"spec_hash": spec_hash, "run_dir": str(run_dir), "metrics": {k: metrics.get(k) for k in EXPORTED_METRICS}}


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def next_version(model_dir: Path, policy: Union[str, int]) -> int:
    versions = existing_versions(model_dir)
    if policy == "increment":
        return (versions[-1] + 1) if versions else 1
    if policy == "timestamp":
        v = int(time.time())
        return max(v, versions[-1] + 1) if versions else v
    v = int(policy)
    if v in versions:
        raise ExportError(
            f"export.version: version {v} already exists in {model_dir}. Received: version={v}; expected a new "
            "version number, 'increment' or 'timestamp'"
        )
    return v


class _Servable(tf.Module):
    """What TF Serving loads: the Keras model behind one raw-pixel signature."""

    def __init__(self, model: keras.Model, input_shape: Sequence[int], input_dtype: tf.DType):
        super().__init__()
        self.model = model
        spec = tf.TensorSpec([None, *input_shape], input_dtype, name=INPUT_NAME)

        @tf.function(input_signature=[spec])
        def serve(images):
            logits = self.model(tf.cast(images, tf.float32), training=False)
            probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
            return {
                OUTPUT_PROBABILITIES: tf.identity(probabilities, name=OUTPUT_PROBABILITIES),
                OUTPUT_CLASS_IDS: tf.argmax(probabilities, axis=-1, output_type=tf.int64, name=OUTPUT_CLASS_IDS),
            }

        self.serve = serve


def _warmup_records(path: Path, samples: np.ndarray, model_name: str, input_dtype: tf.DType) -> None:
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(len(samples)):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_NAME)
            )
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(samples[i : i + 1].astype(input_dtype.as_numpy_dtype)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def export_model(
    model: keras.Model,
    export_root: Union[str, Path],
    model_name: str,
    *,
    class_names: Sequence[str],
    input_shape: Sequence[int],
    input_dtype: str = "uint8",
    version: Union[str, int] = "increment",
    pixel_max: float = 255.0,
    warmup_samples: Optional[np.ndarray] = None,
    metadata: Optional[dict] = None,
) -> Path:
    """Write the model as `<export_root>/<model_name>/<version>/` atomically; returns the version directory.

    `export_root` is a models root (jobs.contract.models_root): TF Serving's base path is `<export_root>/<model>`."""
    model_dir = Path(export_root) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    number = next_version(model_dir, version)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{number}-", dir=model_dir))
    try:
        dtype = tf.as_dtype(input_dtype)
        servable = _Servable(model, input_shape, dtype)
        tf.saved_model.save(servable, str(tmp), signatures={SIGNATURE_NAME: servable.serve})
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / CLASS_NAMES_ASSET).write_text("\n".join(class_names) + "\n")
        if warmup_samples is not None and len(warmup_samples):
            (tmp / "assets.extra").mkdir(exist_ok=True)
            _warmup_records(tmp / "assets.extra" / WARMUP_FILE, warmup_samples[:1000], model_name, dtype)
        info = {
            "model_name": model_name,
            "version": number,
            "class_names": list(class_names),
            "input_name": INPUT_NAME,
            "input_shape": [int(d) for d in input_shape],
            "input_dtype": input_dtype,
            "pixel_max": float(pixel_max),
            "outputs": {OUTPUT_PROBABILITIES: "float32 [batch, classes]", OUTPUT_CLASS_IDS: "int64 [batch]"},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(metadata or {}),
        }
        atomic_write_json(tmp / MODEL_METADATA_FILE, info)
        final = model_dir / str(number)
        if final.exists():
            raise ExportError(f"{final} appeared while exporting (another writer?); refusing to overwrite it")
        os.replace(tmp, final)
        os.chmod(final, 0o755)  # mkdtemp makes 0700; the serving user must be able to read it
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
