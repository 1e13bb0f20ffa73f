"""What every loader shares: the loaded splits, the raw loader result, the error for missing files, and the
split helpers that are seeded by `data.split_seed`."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jobs.errors import BadInputError, DataUnavailableError


class DataUnavailable(DataUnavailableError):
    """A dataset file is missing and cannot be fetched; the message names the file and where to put it (exit 3)."""


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




@dataclass
class Raw:
    """What a loader returns: train and test splits before colour conversion, resizing and validation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    pixel_max: float = 255.0
    notes: list[str] = field(default_factory=list)
    # True when class_names come from the data itself (folder names) and data.class_names was already applied.
    names_resolved: bool = False


def as_nhwc_uint8(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return x


def split_off(x, y, fraction: float, seed: int, shuffle: bool):
    """Keras `validation_split` semantics: the last `fraction` of the (optionally shuffled) data."""
    n = len(x)
    cut = n - int(round(n * fraction))
    if not shuffle:  # views, not copies: CIFAR-sized arrays need not be duplicated
        return x[:cut], y[:cut], x[cut:], y[cut:]
    idx = np.random.default_rng(seed).permutation(n)
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) holding out `fraction` of every class; a class with 2+ examples keeps 1+ on each side.

    Both index arrays are sorted, so the relative order of the source is kept (callers shuffle when they want to).
    """
    test_parts = []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(members) * fraction))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        else:
            k = 0
        test_parts.append(members[:k])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.array([], dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def where(path: Path) -> str:
    return str(path.expanduser())


def open_npz(source, what: str, expected: str) -> np.lib.npyio.NpzFile:
    """np.load(source) as an .npz archive, or a ValueError saying `what` is not one (pickle is never allowed)."""
    try:
        npz = np.load(source, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as exc:
        # A file that is neither a zip nor a .npy is tried as a pickle, and numpy's refusal suggests loading it
        # unsafely: never pass that on. Zip and I/O errors say what is wrong, so they are quoted.
        why = "" if isinstance(exc, (ValueError, EOFError)) else f" ({exc})"
        raise BadInputError(f"{what} is not a NumPy .npz archive{why}; {expected}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise BadInputError(f"{what} holds a single array, not an .npz archive; {expected}")
    return npz

