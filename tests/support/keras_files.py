"""Files in the published layouts of the Keras datasets (CIFAR pickles, Fashion-MNIST IDX, mnist.npz), written
small and seeded, for the data tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from jobs.datasets import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR10_CLASSES


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """[N, 32, 32, 3] -> CIFAR rows [N, 3072]: the R plane, then G, then B, each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        # The published files are Python 2 pickles whose str objects load as bytes under encoding="bytes". Python 3
        # cannot write a Python 2 str (protocol 2 wraps bytes in _codecs.encode, which Keras refuses too), so bytes
        # are written natively: they load the same way.
        pickle.dump(obj, f, protocol=4)


def write_cifar10(folder: Path, per_batch: int = 4, seed: int = 0, meta: bool = True) -> dict:
    """data_batch_1..5 + test_batch (+ batches.meta) in `folder`; returns the images and labels written."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        imgs = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        _dump(folder / name, {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": cifar_rows(imgs),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        })
        out[name] = (imgs, np.array(labels))
    if meta:
        _dump(folder / "batches.meta", {
            b"label_names": [n.encode() for n in CIFAR10_CLASSES],
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
        })
    return out


def write_cifar100(folder: Path, n: int = 6, seed: int = 0, meta: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name in ("train", "test"):
        imgs = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [int(v) for v in rng.integers(0, 20, size=n)]
        _dump(folder / name, {
            b"filenames": [f"f{i}.png".encode() for i in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": cifar_rows(imgs),
        })
        out[name] = (imgs, np.array(fine), np.array(coarse))
    if meta:
        _dump(folder / "meta", {
            b"fine_label_names": [n.encode() for n in CIFAR100_FINE_CLASSES],
            b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_CLASSES],
        })
    return out


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return gzip.compress(struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def idx_labels(labels: np.ndarray) -> bytes:
    return gzip.compress(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_fashion_mnist(folder: Path, n_train: int = 10, n_test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(idx_images(x))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(idx_labels(y))
        out[split] = (x, y)
    return out


def write_mnist(path: Path, n_train: int = 10, n_test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, size=n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, size=n_test).astype(np.uint8),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays
