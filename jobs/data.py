"""Dataset loaders: every dataset the spec names, read into uint8 image arrays with integer labels.

Resizing and colour conversion happen here (images of an image folder differ in size, so a fixed size must be
chosen before batching); rescaling and standardization happen inside the model graph, so the exported model
takes raw pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from jobs.spec import DataSpec

log = logging.getLogger(__name__)


class DataUnavailable(Exception):
    """A dataset file is missing and cannot be downloaded; the message names the file and where to put it."""


@dataclass
class LoadedData:
    x_train: np.ndarray  # uint8 [N, H, W, C]
    y_train: np.ndarray  # int64 [N]
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    pixel_max: float  # the largest value a pixel can take in this dataset (255, or 16 for digits)
    notes: list[str] = field(default_factory=list)  # e.g. "skipped 3 corrupt files"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _as_nhwc_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x


def _split_off(x, y, fraction: float, seed: int, shuffle: bool):
    """Keras `validation_split` semantics: the last `fraction` of the (optionally shuffled) data."""
    n = len(x)
    idx = np.arange(n)
    if shuffle:
        idx = np.random.default_rng(seed).permutation(n)
    cut = n - int(round(n * fraction))
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def _load_digits(spec: DataSpec, seed: int):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)  # values 0..16
    y = bunch.target.astype(np.int64)
    # Digits has no test split: hold one out, stratification-free but shuffled with the seed so classes mix.
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    x_train, y_train, x_test, y_test = _split_off(x, y, spec.test_fraction, seed, shuffle=False)
    return (x_train, y_train), (x_test, y_test), [str(i) for i in range(10)], 16.0


_LOADERS = {"digits": _load_digits}


def _convert(x: np.ndarray, spec: DataSpec) -> np.ndarray:
    x = _as_nhwc_uint8(x)
    if spec.color_mode == "grayscale" and x.shape[-1] != 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: x.shape[-1]]
        x = _as_nhwc_uint8((x[..., :3].astype(np.float32) @ (weights / weights.sum()))[..., None])
    elif spec.color_mode == "rgb" and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if spec.resize is not None and tuple(x.shape[1:3]) != tuple(spec.resize):
        from PIL import Image

        h, w = spec.resize
        x = np.stack(
            [
                np.asarray(Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).resize((w, h), Image.BILINEAR))
                for img in x
            ]
        )
        x = _as_nhwc_uint8(x)
    return x


def load_dataset(spec: DataSpec, seed: int) -> LoadedData:
    if spec.dataset not in _LOADERS:
        raise NotImplementedError(f"dataset {spec.dataset!r} has no loader yet")
    (x_train, y_train), (x_test, y_test), class_names, pixel_max = _LOADERS[spec.dataset](spec, seed)
    x_train, x_test = _convert(x_train, spec), _convert(x_test, spec)
    y_train, y_test = np.asarray(y_train).reshape(-1).astype(np.int64), np.asarray(y_test).reshape(-1).astype(np.int64)

    v = spec.validation
    if v.use_test:
        x_val, y_val = x_test, y_test
    elif v.train_size is not None:
        if v.train_size >= len(x_train):
            raise ValueError(
                f"data.validation.train_size={v.train_size} leaves no validation data: the training set has "
                f"{len(x_train)} examples"
            )
        x_train, y_train, x_val, y_val = x_train[: v.train_size], y_train[: v.train_size], x_train[v.train_size:], y_train[v.train_size:]
    else:
        x_train, y_train, x_val, y_val = _split_off(x_train, y_train, v.fraction, seed, v.shuffle)

    if spec.max_train_examples is not None:
        x_train, y_train = x_train[: spec.max_train_examples], y_train[: spec.max_train_examples]

    if spec.class_names is not None:
        if len(spec.class_names) != len(class_names):
            raise ValueError(
                f"data.class_names has {len(spec.class_names)} names but dataset {spec.dataset!r} has "
                f"{len(class_names)} classes"
            )
        class_names = list(spec.class_names)
    return LoadedData(x_train, y_train, x_val, y_val, x_test, y_test, class_names, pixel_max)
