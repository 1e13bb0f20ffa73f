"""An image folder as a list of files: class folders, label order, and the train/validation/test split made on the
file list with `data.split_seed`. Shared by the in-memory loader, the streaming reader and `jobctl data pack`, so
all three take the same images for each split (when every file is readable)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jobs.datasets.base import DataUnavailable, split_off, stratified_holdout
from jobs.errors import BadInputError
from jobs.spec import DataSpec

LAYOUT_HINT = ("expected a folder with one sub-folder per class (root/<class>/<image>), optionally under root/train "
               "and root/test")


@dataclass
class FolderListing:
    root: Path
    train_root: Path
    split_layout: bool  # root/train + root/test (the splits are given) rather than root/<class>
    classes: list[str]  # label order
    train: list[tuple[Path, str]]  # (file, class folder name), sorted
    test: list[tuple[Path, str]]

    def labels(self, files: list[tuple[Path, str]]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.asarray([index[c] for _, c in files], dtype=np.int64)


def class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(root: Path, classes: list[str]) -> list[tuple[Path, str]]:
    """Every non-hidden file under each class folder (recursively, like Keras), in sorted order."""
    out = []
    for c in classes:
        cdir = root / c
        if not cdir.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(cdir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend((Path(dirpath) / f, c) for f in sorted(filenames) if not f.startswith("."))
    return out


def list_folder(spec: DataSpec) -> FolderListing:
    """The folder's classes (`data.class_names` fixes their order) and files; every layout error named."""
    root = Path(spec.path).expanduser()  # type: ignore[arg-type]  # the spec requires a path for image_folder
    if not root.exists():
        raise DataUnavailable(f"data.path: folder {spec.path!r} does not exist; {LAYOUT_HINT}")
    if not root.is_dir():
        raise BadInputError(f"data.path: {spec.path!r} is a file, not a folder; {LAYOUT_HINT}")
    split_layout = (root / "train").is_dir() and (root / "test").is_dir()
    if (root / "test").is_dir() and not split_layout:
        raise BadInputError(
            f"data.path: {spec.path!r} has a test/ sub-folder but no train/; expected both train/ and test/ "
            "(root/train/<class>/<image>, root/test/<class>/<image>) or neither (root/<class>/<image>)"
        )
    train_root = root / "train" if split_layout else root
    found = class_dirs(train_root)
    if len(found) < 2:
        raise BadInputError(
            f"data.path: {str(train_root)!r} has {len(found)} class sub-folder{'s' if len(found) != 1 else ''} "
            f"{found}; {LAYOUT_HINT}, with at least 2 classes"
        )
    classes = found
    if spec.class_names is not None:
        # Like Keras' image_dataset_from_directory(class_names=...): the folder names, listed to fix label order.
        if sorted(spec.class_names) != found:
            missing = sorted(set(spec.class_names) - set(found))
            extra = sorted(set(found) - set(spec.class_names))
            raise BadInputError(
                f"data.class_names: for image_folder they must name the class folders of {str(train_root)!r} "
                f"(they set the label order); no folder for {missing}, folders not listed {extra}"
            )
        classes = list(spec.class_names)
    test: list[tuple[Path, str]] = []
    if split_layout:
        test_classes = class_dirs(root / "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise BadInputError(
                f"data.path: {str(root / 'test')!r} has class folders {unknown} that {str(train_root)!r} lacks; "
                "expected the test classes to be among the training classes"
            )
        test = list_images(root / "test", test_classes)
    return FolderListing(root, train_root, split_layout, classes, list_images(train_root, classes), test)


def holdout_order(labels: np.ndarray, n_test: int, split_layout: bool, test_fraction: float, seed: int):
    """(train indices, test indices) in the order every image-folder path uses: a stratified test share of the
    training images (unless the folder has train/ and test/: then indices into the `n_test` test images), then
    both shuffled with the seed, so a validation split taken from the end (Keras semantics) holds every class."""
    rng = np.random.default_rng(seed)
    if split_layout:
        train_idx, test_idx = np.arange(len(labels)), np.arange(n_test)
    else:
        train_idx, test_idx = stratified_holdout(labels, test_fraction, rng)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def split_files(listing: FolderListing, spec: DataSpec) -> dict[str, tuple[list[str], np.ndarray]]:
    """{"train", "validation", "test"} -> (file paths, labels): the splits `load_dataset` makes of the decoded
    images, made on the file list (same seeds, same rules), so nothing is decoded to choose them."""
    y = listing.labels(listing.train)
    train_idx, test_idx = holdout_order(y, len(listing.test), listing.split_layout, spec.test_fraction, spec.split_seed)
    source_test = listing.test if listing.split_layout else listing.train
    y_source_test = listing.labels(listing.test) if listing.split_layout else y
    files = np.array([str(p) for p, _ in listing.train], dtype=object)
    test_files = np.array([str(p) for p, _ in source_test], dtype=object)
    x_tr, y_tr = files[train_idx], y[train_idx]
    x_te, y_te = test_files[test_idx], y_source_test[test_idx]
    if not len(x_te):
        raise BadInputError(
            f"data.test_fraction={spec.test_fraction:g}: the folder {str(listing.root)!r} ends with no test images; "
            "expected at least one (raise test_fraction or add images)"
        )
    v = spec.validation
    if v.use_test:
        x_va, y_va = x_te, y_te
    elif v.train_size is not None:
        if v.train_size >= len(x_tr):
            raise BadInputError(f"data.validation.train_size={v.train_size} leaves no validation data: the training "
                                f"set has {len(x_tr)} images")
        x_tr, y_tr, x_va, y_va = x_tr[: v.train_size], y_tr[: v.train_size], x_tr[v.train_size:], y_tr[v.train_size:]
    else:
        x_tr, y_tr, x_va, y_va = split_off(x_tr, y_tr, v.fraction, spec.split_seed, v.shuffle)
        if not len(x_va) or not len(x_tr):
            raise BadInputError(
                f"data.validation.fraction={v.fraction:g} of {len(x_tr) + len(x_va)} training images leaves "
                f"{len(x_tr)} for training and {len(x_va)} for validation; expected at least one in each"
            )
    if spec.max_train_examples is not None:
        x_tr, y_tr = x_tr[: spec.max_train_examples], y_tr[: spec.max_train_examples]
    return {"train": (list(x_tr), y_tr), "validation": (list(x_va), y_va), "test": (list(x_te), y_te)}
