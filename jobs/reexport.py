"""Re-export a finished run's best checkpoint (`jobctl export RUN_DIR`) without reloading its dataset.

The TF Serving warmup records come from the run's first export (the same test images), so every version of a
model is warmed up alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

from jobs import contract
from jobs.contract import BEST_WEIGHTS_FILE, INPUT_NAME, METRICS_FILE, RUN_SPEC_FILE, WARMUP_FILE, RunStatus
from jobs.errors import BadInputError
from jobs.spec import parse_spec


class RunNotExportable(BadInputError):
    """RUN_DIR is not a finished, succeeded run: exit 2."""


def reexport_run(run_dir: Union[str, Path], export_root: Optional[Union[str, Path]] = None, version="increment") -> Path:
    import numpy as np
    import yaml

    from jobs.export import export_model, run_metadata
    from jobs.models import build_model

    run_dir = Path(run_dir)
    needed = [run_dir / RUN_SPEC_FILE, run_dir / METRICS_FILE, run_dir / BEST_WEIGHTS_FILE]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise RunNotExportable(f"run_dir: {run_dir} is not a finished run; missing {', '.join(missing)}")
    spec = parse_spec(yaml.safe_load((run_dir / RUN_SPEC_FILE).read_text()), str(run_dir / RUN_SPEC_FILE))
    metrics = json.loads((run_dir / METRICS_FILE).read_text())
    if metrics.get("status") != RunStatus.SUCCEEDED or "input_shape" not in metrics:
        raise RunNotExportable(f"run_dir: {run_dir} did not succeed (status {metrics.get('status')!r}); nothing to export")
    input_shape = tuple(metrics["input_shape"])
    # Normalization statistics are weights of the checkpoint: a placeholder adapt is overwritten by load_weights.
    placeholder = np.zeros((2, *input_shape), dtype="uint8") if spec.preprocessing.standardize else None
    model = build_model(
        spec.model, spec.preprocessing, input_shape, metrics["num_classes"], metrics["pixel_max"],
        x_adapt=placeholder, name=spec.name.replace("-", "_"),
    )
    model.load_weights(str(run_dir / BEST_WEIGHTS_FILE))
    root = Path(export_root) if export_root else contract.models_root(contract.artifacts_of_run(metrics["run_dir"]))
    return export_model(
        model, root, spec.model_name, class_names=metrics["class_names"], input_shape=input_shape,
        input_dtype=spec.export.input_dtype, version=version, pixel_max=metrics["pixel_max"],
        warmup_samples=_warmup_samples(metrics.get("export_path")),
        metadata=run_metadata(spec.spec_hash(), run_dir, metrics),
    )


def _warmup_samples(export_path: Optional[str]):
    """The images of an earlier export's warmup records, or None when it has none (or is gone)."""
    records = Path(export_path or "") / "assets.extra" / WARMUP_FILE
    if not export_path or not records.is_file():
        return None
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    images = []
    for raw in tf.data.TFRecordDataset(str(records)):
        log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        images.append(tf.make_ndarray(log.predict_log.request.inputs[INPUT_NAME]))
    return np.concatenate(images) if images else None
