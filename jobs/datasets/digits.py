"""scikit-learn's bundled 8x8 digits (pixels 0..16): no download, no test split (one is held out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.datasets.base import Raw, split_off
from jobs.spec import DataSpec


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: the CSV `load_digits()` reads, read without importing scikit-learn (~2 s)."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    csv = Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz" if found and found.origin else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        if table.ndim == 2 and table.shape[1] == 65:
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    from sklearn.datasets import load_digits  # a layout we do not know: let scikit-learn read it

    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits(spec: DataSpec, seed: int) -> Raw:
    images, target = digits_arrays()
    x = images.astype(np.uint8)  # values 0..16
    y = target.astype(np.int64)
    # Digits has no test split: hold one out, stratification-free but shuffled with the seed so classes mix.
    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    x_train, y_train, x_test, y_test = split_off(x, y, spec.test_fraction, seed, shuffle=False)
    return Raw(x_train, y_train, x_test, y_test, [str(i) for i in range(10)], 16.0)

