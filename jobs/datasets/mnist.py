"""MNIST as Keras caches it: one `mnist.npz` with x_train, y_train, x_test, y_test."""

from __future__ import annotations

import io

from jobs.datasets.base import Raw, open_npz
from jobs.datasets.keras_cache import KERAS_SOURCES, keras_files
from jobs.errors import BadInputError
from jobs.spec import DataSpec

MNIST_CLASSES = [str(i) for i in range(10)]


def load_mnist(spec: DataSpec, seed: int) -> Raw:
    read = keras_files(KERAS_SOURCES["mnist"], spec)
    expected = "expected an .npz with x_train, y_train, x_test, y_test"
    with open_npz(io.BytesIO(read("mnist.npz")), "data.dataset: 'mnist': mnist.npz", expected) as f:
        try:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (KeyError, ValueError) as exc:
            raise BadInputError(f"data.dataset: 'mnist': mnist.npz is not the Keras MNIST file ({exc}); {expected}") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise BadInputError(
                f"data.dataset: 'mnist': mnist.npz has {len(x)} images in 'x_{split}' but {len(y)} labels in "
                f"'y_{split}'; expected one label per image"
            )
    return Raw(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], list(MNIST_CLASSES))

