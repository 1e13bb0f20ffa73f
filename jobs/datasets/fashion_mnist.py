"""Fashion-MNIST as Keras caches it: four gzip'd IDX files under `fashion-mnist/`."""

from __future__ import annotations

import gzip

import numpy as np

from jobs.datasets.base import Raw
from jobs.datasets.keras_cache import KERAS_SOURCES, keras_files
from jobs.errors import BadInputError
from jobs.spec import DataSpec

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def _idx(blob: bytes, name: str, magic: int) -> np.ndarray:
    """Decode a gzip'd IDX file, checking the header that Keras' loader skips without reading."""
    try:
        raw = gzip.decompress(blob)
    except (OSError, EOFError) as exc:
        raise BadInputError(f"data.dataset: 'fashion_mnist': {name} is not a gzip file ({exc})") from None
    header = 16 if magic == 2051 else 8
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise BadInputError(
            f"data.dataset: 'fashion_mnist': {name} has magic number {found}; expected {magic} "
            f"({'images' if magic == 2051 else 'labels'}, IDX format)"
        )
    count = int.from_bytes(raw[4:8], "big")
    data = np.frombuffer(raw, np.uint8, offset=header)
    if magic == 2051:
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        if data.size != count * rows * cols:
            raise BadInputError(
                f"data.dataset: 'fashion_mnist': {name} holds {data.size} pixels; its header says "
                f"{count}x{rows}x{cols} (truncated file?)"
            )
        return data.reshape(count, rows, cols)
    if data.size != count:
        raise BadInputError(f"data.dataset: 'fashion_mnist': {name} holds {data.size} labels; its header says {count}")
    return data


def load_fashion_mnist(spec: DataSpec, seed: int) -> Raw:
    read = keras_files(KERAS_SOURCES["fashion_mnist"], spec)
    y_train = _idx(read("train-labels-idx1-ubyte.gz"), "train-labels-idx1-ubyte.gz", 2049)
    x_train = _idx(read("train-images-idx3-ubyte.gz"), "train-images-idx3-ubyte.gz", 2051)
    y_test = _idx(read("t10k-labels-idx1-ubyte.gz"), "t10k-labels-idx1-ubyte.gz", 2049)
    x_test = _idx(read("t10k-images-idx3-ubyte.gz"), "t10k-images-idx3-ubyte.gz", 2051)
    for split, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        if len(x) != len(y):
            raise BadInputError(f"data.dataset: 'fashion_mnist': {split} has {len(x)} images but {len(y)} labels")
    return Raw(x_train, y_train, x_test, y_test, list(FASHION_MNIST_CLASSES))

