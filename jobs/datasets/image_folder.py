"""An image folder (`root/<class>/<image>`, or `root/train/...` + `root/test/...`) decoded into memory with Pillow."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from jobs.datasets.base import Raw
from jobs.datasets.folder_files import LAYOUT_HINT, holdout_order, list_folder
from jobs.errors import BadInputError
from jobs.spec import DataSpec

log = logging.getLogger(__name__)

# image_folder needs one size for every image; this one is used (and logged) when data.resize is not set.
DEFAULT_IMAGE_FOLDER_SIZE = (64, 64)
# Pillow modes that are grey: they stay one channel under color_mode 'keep' (16-bit and float grey are scaled to 'L').
GREY_MODES = frozenset({"1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def to_target_mode(im, color_mode: str):
    """Return a PIL image in mode 'L' or 'RGB': grayscale stays grey under 'keep', everything else becomes RGB.

    Alpha is dropped (as tf.io.decode_image with 3 channels does); 16-bit grey is scaled, not clipped.
    """
    from PIL import Image

    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if (im.mode == "PA" or "transparency" in im.info) else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 / 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 1.0
        im = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    grey = im.mode in GREY_MODES
    target = {"grayscale": "L", "rgb": "RGB"}.get(color_mode, "L" if grey else "RGB")
    return im if im.mode == target else im.convert(target)


def folder_channels(paths, color_mode: str) -> int:
    """The channels every path that reads image files gives a folder: 1 for 'grayscale', 3 for 'rgb'; under 'keep',
    1 when every image is grey, else 3 (the in-memory rule, which the streaming reader and the packer must share).

    'keep' reads headers only (Pillow opens lazily) and stops at the first colour image, so a colour folder costs
    one open; only an all-grey folder is read through. Unreadable files do not count (they are skipped or
    reported when decoded)."""
    from PIL import Image

    if color_mode != "keep":
        return 1 if color_mode == "grayscale" else 3
    grey_seen = False
    for path in paths:
        try:
            with Image.open(path) as im:
                mode = im.mode
        except Exception:  # noqa: BLE001 -- not an image: the decoder reports or skips it
            continue
        if mode not in GREY_MODES:
            return 3
        grey_seen = True
    return 1 if grey_seen else 3


def _decode_image(path: Path, size: tuple[int, int], color_mode: str):
    """(array [H, W, C] uint8, None) or (None, reason). Never raises: a bad file must not stop the others."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(None, (w, h))  # DCT-domain downscale: decodes big photos several times faster
            im = to_target_mode(im, color_mode)
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 -- PIL raises many types for bad files; all mean "skip it"
        if isinstance(exc, UnidentifiedImageError):
            return None, "not an image Pillow can read"
        return None, f"{type(exc).__name__}: {str(exc).replace(str(path), '<file>')}"
    return (arr[..., None] if arr.ndim == 2 else arr), None


def _decode_all(files: list[tuple[Path, str]], class_index: dict[str, int], size, color_mode, root: Path):
    """Decode into one preallocated array (a 224x224 Stanford Dogs is 3 GB: no per-image list, no second copy).

    Returns (x [n_ok, h, w, C], labels, grey mask [n_ok], skipped [(path, reason)]). C is 1 for 'grayscale',
    else 3 (grey images under 'keep' are replicated; the caller keeps one channel when every image is grey).
    """
    h, w = size
    channels = 1 if color_mode == "grayscale" else 3
    x = np.empty((len(files), h, w, channels), dtype=np.uint8)
    grey = np.zeros(len(files), dtype=bool)
    reasons: list[Optional[str]] = [None] * len(files)

    def work(i: int) -> None:
        arr, reason = _decode_image(files[i][0], size, color_mode)
        if arr is None:
            reasons[i] = reason
            return
        x[i] = arr  # (h, w, 1) broadcasts into 3 channels
        grey[i] = arr.shape[-1] == 1

    workers = max(1, min(8, 2 * (os.cpu_count() or 1)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        list(pool.map(work, range(len(files))))
    ok = [i for i, r in enumerate(reasons) if r is None]
    skipped = [(files[i][0].relative_to(root), reasons[i]) for i in range(len(files)) if reasons[i] is not None]
    for j, i in enumerate(ok):  # compact in place over the skipped slots
        if i != j:
            x[j] = x[i]
    labels = np.asarray([class_index[files[i][1]] for i in ok], dtype=np.int64)
    return x[: len(ok)], labels, grey[ok], skipped


def load_image_folder(spec: DataSpec, seed: int) -> Raw:
    listing = list_folder(spec)
    root, train_root, split_layout, classes = listing.root, listing.train_root, listing.split_layout, listing.classes
    notes: list[str] = []
    class_index = {c: i for i, c in enumerate(classes)}

    size = tuple(spec.resize) if spec.resize is not None else DEFAULT_IMAGE_FOLDER_SIZE
    if spec.resize is None:
        msg = f"data.resize is not set: image_folder images are resized to {size[0]}x{size[1]} (height x width)"
        log.info(msg)
        notes.append(msg)

    started = time.monotonic()
    train_files, test_files = listing.train, listing.test
    x_all, y_tr, grey_tr, skipped = _decode_all(train_files, class_index, size, spec.color_mode, root)
    x_te, y_te, grey_te, skipped_te = _decode_all(test_files, class_index, size, spec.color_mode, root)
    skipped += skipped_te

    if skipped:
        shown = "; ".join(f"{p} ({r})" for p, r in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        msg = f"skipped {len(skipped)} unreadable file{'s' if len(skipped) != 1 else ''} (not an image or corrupt): {shown}{more}"
        log.warning(msg)
        for p, r in skipped:
            log.debug("skipped %s: %s", p, r)
        notes.append(msg)
    if not len(x_all):
        raise BadInputError(f"data.path: no readable images under {str(train_root)!r}; {LAYOUT_HINT}")
    if split_layout and not len(x_te):
        raise BadInputError(f"data.path: no readable images under {str(root / 'test')!r}; expected test/<class>/<image>")

    # 'keep' leaves an all-grey folder with one channel; a mix of grey and colour becomes RGB throughout.
    n_grey, n_all = int(grey_tr.sum() + grey_te.sum()), len(grey_tr) + len(grey_te)
    if spec.color_mode == "keep" and n_grey == n_all:
        x_all, x_te = x_all[..., :1], x_te[..., :1]
    elif spec.color_mode == "keep" and n_grey:
        notes.append(f"converted {n_grey} grayscale image{'s' if n_grey != 1 else ''} to RGB (data.color_mode: keep, the folder mixes both)")
    empty = [c for i, c in enumerate(classes) if not np.any(y_tr == i)]
    if empty:
        msg = f"classes without training images: {empty}"
        log.warning(msg)
        notes.append(msg)

    # One gather per split, so the peak is the decoded array plus one copy.
    train_idx, test_idx = holdout_order(y_tr, len(x_te), split_layout, spec.test_fraction, seed)
    if split_layout:
        test_source = x_te
    else:
        y_te, test_source = y_tr, x_all
        notes.append(f"no train/ and test/ sub-folders: held out {len(test_idx)} images ({spec.test_fraction:g} per class) as the test set")
    x_train, y_train = np.ascontiguousarray(x_all[train_idx]), y_tr[train_idx]
    x_test, y_test = np.ascontiguousarray(test_source[test_idx]), y_te[test_idx]
    del x_all, test_source, x_te
    log.info(
        "image_folder: %d train and %d test images in %d classes from %s, %dx%dx%d, decoded in %.1f s",
        len(x_train), len(x_test), len(classes), root, *x_train.shape[1:], time.monotonic() - started,
    )
    return Raw(x_train, y_train, x_test, y_test, list(classes), 255.0, notes, names_resolved=True)

