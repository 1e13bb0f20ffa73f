"""`load_dataset`: the spec's data section -> `LoadedData` (uint8 NHWC arrays, int labels, the three splits)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from jobs.datasets.base import LoadedData, Raw, as_nhwc_uint8, split_off
from jobs.datasets.cifar import load_cifar10, load_cifar100
from jobs.datasets.digits import load_digits
from jobs.datasets.fashion_mnist import load_fashion_mnist
from jobs.datasets.image_folder import load_image_folder
from jobs.datasets.mnist import load_mnist
from jobs.datasets.npz import load_npz
from jobs.errors import BadInputError
from jobs.spec import DataSpec

_LOADERS: dict[str, Callable[[DataSpec, int], Raw]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "image_folder": load_image_folder,
    "npz": load_npz,
}


def _convert(x: np.ndarray, spec: DataSpec) -> np.ndarray:
    x = as_nhwc_uint8(x)
    if spec.color_mode == "grayscale" and x.shape[-1] != 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: x.shape[-1]]
        x = as_nhwc_uint8((x[..., :3].astype(np.float32) @ (weights / weights.sum()))[..., None])
    elif spec.color_mode == "rgb" and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if spec.resize is not None and len(x) and tuple(x.shape[1:3]) != tuple(spec.resize):
        from PIL import Image

        h, w = spec.resize

        # Serial on purpose: PIL takes ~0.06 ms per small image, less than a thread pool's per-item overhead.
        x = np.stack(
            [
                np.asarray(Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).resize((w, h), Image.Resampling.BILINEAR))
                for img in x
            ]
        )
        x = as_nhwc_uint8(x)
    return x


def load_dataset(spec: DataSpec) -> LoadedData:
    """Held-out splits are seeded by `spec.split_seed`, never by the run's training seed, so runs with different
    training seeds (sweep trials, ensemble members) are scored on the same test and validation images."""
    if spec.dataset not in _LOADERS:
        raise NotImplementedError(f"dataset {spec.dataset!r} has no loader yet")
    seed = spec.split_seed
    raw = _LOADERS[spec.dataset](spec, seed)
    class_names, pixel_max = raw.class_names, raw.pixel_max
    x_train, x_test = _convert(raw.x_train, spec), _convert(raw.x_test, spec)
    y_train = np.asarray(raw.y_train).reshape(-1).astype(np.int64)
    y_test = np.asarray(raw.y_test).reshape(-1).astype(np.int64)
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and y.min() < 0:  # one_hot of a negative label is all zeros: it would train on nothing
            raise BadInputError(f"data.dataset: {spec.dataset!r} {split} labels must be class indices >= 0; received "
                             f"{int(y.min())} at index {int(np.argmin(y))}")

    if not len(x_test):
        raise BadInputError(
            f"data.test_fraction={spec.test_fraction:g}: dataset {spec.dataset!r} ends with no test examples; "
            "expected at least one (raise test_fraction or add data)"
        )

    v = spec.validation
    if v.use_test:
        x_val, y_val = x_test, y_test
    elif v.train_size is not None:
        if v.train_size >= len(x_train):
            raise BadInputError(
                f"data.validation.train_size={v.train_size} leaves no validation data: the training set has "
                f"{len(x_train)} examples"
            )
        x_train, y_train, x_val, y_val = x_train[: v.train_size], y_train[: v.train_size], x_train[v.train_size:], y_train[v.train_size:]
    else:
        x_train, y_train, x_val, y_val = split_off(x_train, y_train, v.fraction, seed, v.shuffle)
        if not len(x_val) or not len(x_train):
            raise BadInputError(
                f"data.validation.fraction={v.fraction:g} of {len(x_train) + len(x_val)} training examples leaves "
                f"{len(x_train)} for training and {len(x_val)} for validation; expected at least one in each"
            )

    if spec.max_train_examples is not None:
        x_train, y_train = x_train[: spec.max_train_examples], y_train[: spec.max_train_examples]

    if spec.class_names is not None and not raw.names_resolved:
        if len(spec.class_names) != len(class_names):
            raise BadInputError(
                f"data.class_names has {len(spec.class_names)} names but dataset {spec.dataset!r} has "
                f"{len(class_names)} classes"
            )
        class_names = list(spec.class_names)
    top = max((int(a.max()) for a in (y_train, y_val, y_test) if a.size), default=-1)
    if top >= len(class_names):
        raise BadInputError(
            f"data.class_names: dataset {spec.dataset!r} has label {top} but only {len(class_names)} class names; "
            "expected labels 0..num_classes-1"
        )
    return LoadedData(x_train, y_train, x_val, y_val, x_test, y_test, class_names, pixel_max, list(raw.notes))

