"""A user's `.npz` file: x_train, y_train, optionally x_test, y_test and class_names; never loaded with pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jobs.datasets.base import DataUnavailable, Raw, as_nhwc_uint8, open_npz, stratified_holdout
from jobs.errors import BadInputError
from jobs.spec import DataSpec


def _npz_images(x: np.ndarray, key: str, file: str, notes: list[str]) -> np.ndarray:
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise BadInputError(
            f"data.path: {file} array {key!r} has shape {list(x.shape)}; expected [N, height, width] or "
            "[N, height, width, channels] with 1 or 3 channels (NHWC)"
        )
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind not in "biuf":
        raise BadInputError(f"data.path: {file} array {key!r} has dtype {x.dtype}; expected uint8 pixels")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if x.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        notes.append(f"{key}: float pixels in [0, 1] scaled to 0..255 uint8")
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0:
        if x.dtype.kind == "f" and not np.all(x == np.rint(x)):
            notes.append(f"{key}: float pixels in [0, 255] rounded to uint8")
        return np.rint(x).astype(np.uint8)
    raise BadInputError(
        f"data.path: {file} array {key!r} has values in [{lo:g}, {hi:g}]; expected uint8 pixels 0..255 "
        "(or floats in [0, 1])"
    )


def _npz_labels(y: np.ndarray, key: str, file: str, n: int, notes: list[str]) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:
        if y.dtype.kind not in "biuf":
            raise BadInputError(f"data.path: {file} array {key!r} has dtype {y.dtype}; expected one-hot numbers")
        one_hot = np.all((y == 0) | (y == 1), axis=1) & (np.count_nonzero(y == 1, axis=1) == 1)
        if not np.all(one_hot):
            i = int(np.argmin(one_hot))
            row = y[i]
            if row.size <= 10:
                shown = f"is {row.tolist()}"
            else:
                nonzero = {int(c): row[c].item() for c in np.flatnonzero(row)[:10]}
                shown = f"has nonzero values {nonzero} (column: value)"
            raise BadInputError(
                f"data.path: {file} array {key!r} has shape {list(y.shape)} but row {i} {shown}; expected one-hot "
                "rows (a single 1, zeros elsewhere) or [N] integer class indices"
            )
        notes.append(f"{key}: one-hot labels converted to class indices")
        y = np.argmax(y, axis=1)
    y = y.reshape(-1) if y.ndim == 2 else y
    if y.ndim != 1:
        raise BadInputError(f"data.path: {file} array {key!r} has shape {list(y.shape)}; expected [N] integer labels")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.all(y == np.rint(y))):
        raise BadInputError(f"data.path: {file} array {key!r} has dtype {y.dtype}; expected integer class indices")
    if len(y) != n:
        raise BadInputError(f"data.path: {file} has {n} images but {len(y)} labels in {key!r}; expected one label per image")
    if len(y) and y.min() < 0:
        raise BadInputError(f"data.path: {file} array {key!r} has negative label {int(y.min())}; expected 0..num_classes-1")
    return y.astype(np.int64)


def load_npz(spec: DataSpec, seed: int) -> Raw:
    path = Path(spec.path).expanduser()  # type: ignore[arg-type]
    file = repr(str(path))
    expected = "expected x_train, y_train and optionally x_test, y_test, class_names"
    if not path.is_file():
        raise DataUnavailable(
            f"data.path: {spec.path!r} {'is a folder' if path.is_dir() else 'does not exist'}; expected an .npz "
            f"file ({expected}); write one with numpy.savez(path, x_train=..., y_train=...)"
        )
    npz = open_npz(path, f"data.path: {file}", f"{expected}; write one with numpy.savez(path, x_train=..., y_train=...)")
    with npz:
        keys = sorted(npz.files)

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except ValueError as exc:  # object arrays need pickle, which a data file must not run
                raise BadInputError(
                    f"data.path: {file} array {key!r} is an object array ({exc}); store numbers, and class names "
                    "as a fixed-width string array (np.array(names, dtype=str))"
                ) from None

        for key in ("x_train", "y_train"):
            if key not in keys:
                raise BadInputError(f"data.path: {file} has no array {key!r}; found keys {keys}; {expected}")
        has_xt, has_yt = "x_test" in keys, "y_test" in keys
        if has_xt != has_yt:
            present, absent = ("x_test", "y_test") if has_xt else ("y_test", "x_test")
            raise BadInputError(f"data.path: {file} has {present!r} but no {absent!r}; found keys {keys}; {expected}")
        notes: list[str] = []
        x_train = _npz_images(get("x_train"), "x_train", file, notes)
        y_train = _npz_labels(get("y_train"), "y_train", file, len(x_train), notes)
        train_classes = np.unique(y_train)
        if len(train_classes) < 2:
            found = f"only label {int(train_classes[0])}" if len(train_classes) else "no labels"
            raise BadInputError(f"data.path: {file} array 'y_train' has {found}; expected at least 2 classes")
        if has_xt:
            x_test = _npz_images(get("x_test"), "x_test", file, notes)
            y_test = _npz_labels(get("y_test"), "y_test", file, len(x_test), notes)
            if as_nhwc_uint8(x_test[:0]).shape[1:] != as_nhwc_uint8(x_train[:0]).shape[1:]:
                raise BadInputError(
                    f"data.path: {file} x_test images are {list(x_test.shape[1:])} but x_train images are "
                    f"{list(x_train.shape[1:])}; expected the same shape"
                )
            unseen = np.setdiff1d(y_test, train_classes)
            if unseen.size:
                more = f" ... ({unseen.size} in all)" if unseen.size > 20 else ""
                raise BadInputError(
                    f"data.path: {file} array 'y_test' has labels {unseen[:20].tolist()}{more} that 'y_train' lacks; "
                    "expected the test classes to be among the training classes"
                )
        else:
            train_idx, test_idx = stratified_holdout(y_train, spec.test_fraction, np.random.default_rng(seed))
            x_test, y_test = x_train[test_idx], y_train[test_idx]
            x_train, y_train = x_train[train_idx], y_train[train_idx]
            notes.append(f"no x_test/y_test: held out {len(test_idx)} examples ({spec.test_fraction:g} per class) as the test set")
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
        if "class_names" in keys:
            names = [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in get("class_names").reshape(-1).tolist()]
            if num_classes > len(names):
                raise BadInputError(
                    f"data.path: {file} has labels up to {num_classes - 1} but class_names lists {len(names)} names; "
                    "expected one name per class"
                )
        else:
            names = [str(i) for i in range(num_classes)]
    return Raw(x_train, y_train, x_test, y_test, names, 255.0, notes)

