"""Accuracy and loss of exported models and of their ensemble, side by side, on the same test images."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from jobs.errors import BadInputError


@dataclass
class Row:
    name: str
    path: str
    accuracy: float
    loss: float
    examples: int
    kind: str  # "member", "model", "ensemble", "mean"

    def as_dict(self) -> dict:
        return asdict(self)


def scores(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean sparse categorical cross-entropy); probabilities clipped like Keras (1e-7)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if p.ndim != 2 or len(p) != len(y):
        raise BadInputError(f"expected probabilities [N, classes] and N labels, received {list(p.shape)} and {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise BadInputError(f"labels must lie in [0, {p.shape[1] - 1}]; received values {y.min()}..{y.max()}")
    acc = float((p.argmax(axis=1) == y).mean()) if len(y) else float("nan")
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)).mean()) if len(y) else float("nan")
    return acc, loss


def _predict(version_dir: Path, x: np.ndarray, batch: int = 512) -> np.ndarray:
    from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
    from serving import savedmodel
    from serving.tensors import shape_mismatch

    model = savedmodel.load(version_dir)
    sig = model.signatures[SIGNATURE_NAME]
    dtype = sig.inputs[INPUT_NAME].numpy_dtype
    mismatch = shape_mismatch(INPUT_NAME, sig.inputs[INPUT_NAME].shape, x.shape)
    if mismatch:
        raise BadInputError(f"{version_dir}: {mismatch}; the test images must have the shape the model was trained on")
    outs = [savedmodel.call(sig, {INPUT_NAME: x[i : i + batch].astype(dtype)})[OUTPUT_PROBABILITIES] for i in range(0, len(x), batch)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _name(version_dir: Path, meta: dict) -> str:
    return f"{meta.get('model_name') or version_dir.parent.name}/{version_dir.name}"


def evaluate_models(paths: Sequence[Union[str, Path]], x: np.ndarray, y: np.ndarray) -> list[Row]:
    """Each model's accuracy and loss. An ensemble built by jobctl also lists its members (from jobctl.json);
    several plain models get an extra row: the equal-weight mean of their probabilities."""
    from serving.savedmodel import read_metadata, resolve_version_dir

    rows: list[Row] = []
    plain: list[np.ndarray] = []
    for p in paths:
        vdir = resolve_version_dir(p)
        meta = read_metadata(vdir)
        if meta.get("ensemble"):
            for member in meta.get("members", []):
                mdir = Path(member["path"])
                if (mdir / "saved_model.pb").is_file():
                    acc, loss = scores(_predict(mdir, x), y)
                    rows.append(Row(_name(mdir, read_metadata(mdir)), str(mdir), acc, loss, len(y), "member"))
            acc, loss = scores(_predict(vdir, x), y)
            rows.append(Row(_name(vdir, meta), str(vdir), acc, loss, len(y), "ensemble"))
        else:
            probs = _predict(vdir, x)
            plain.append(probs)
            acc, loss = scores(probs, y)
            rows.append(Row(_name(vdir, meta), str(vdir), acc, loss, len(y), "model"))
    if len(plain) > 1:
        acc, loss = scores(np.mean(plain, axis=0), y)
        rows.append(Row(f"mean of {len(plain)}", "", acc, loss, len(y), "mean"))
    return rows


def load_test_split(spec_path: Union[str, Path], overrides: Optional[dict] = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The test images and labels a job spec's `data` section describes (same loader, same seed as training)."""
    from jobs.datasets import load_dataset
    from jobs.spec import load_spec

    spec = load_spec(spec_path, overrides)
    data = load_dataset(spec.data)
    return data.x_test, data.y_test, data.class_names
