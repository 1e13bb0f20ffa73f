"""`jobctl data pack`: images -> sharded TFRecords and dataset.json (the format is described in `packed`).

The split is made once, here, with `data.split_seed` (the same file-level split the in-memory and streaming image
folder paths make). Shards are written in parallel (Pillow and TFRecordWriter release the GIL), each to a hidden temp
name, hashed, then renamed into place beside a small sidecar with its sha256 and counts. An interrupted pack run
again with the same source and options keeps every shard whose sidecar and checksum agree and writes the rest;
dataset.json comes last. A directory holding another dataset (or anything else) is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from jobs.datasets.base import LoadedData
from jobs.datasets.folder_files import list_folder, split_files
from jobs.datasets.image_folder import folder_channels, to_target_mode
from jobs.datasets.packed import ENCODINGS, FORMAT, FORMAT_VERSION, IMAGE_KEY, LABEL_KEY, MANIFEST, SPLITS, shard_name
from jobs.errors import BadInputError
from jobs.fsutil import atomic_write_json
from jobs.spec import DataSpec

log = logging.getLogger(__name__)
PLAN = ".pack-plan.json"


@dataclass
class PackOptions:
    encoding: str = "jpeg"
    resize: Optional[tuple[int, int]] = None  # (height, width)
    shard_size: int = 1024  # examples per shard
    quality: int = 90  # jpeg
    workers: int = 0  # 0: one per core

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise BadInputError(f"--encoding: expected one of {list(ENCODINGS)}, received {self.encoding!r}")
        if self.shard_size < 1:
            raise BadInputError(f"--shard-size: expected at least 1 example per shard, received {self.shard_size}")
        if not 1 <= self.quality <= 100:
            raise BadInputError(f"--quality: expected 1..100, received {self.quality}")


@dataclass
class _Source:
    """What to pack: per split, items (file paths or array rows) and labels; `read(split, i)` gives one PIL image
    or raises."""

    description: str
    class_names: list[str]
    splits: dict[str, tuple[list, np.ndarray]]
    read: Callable[[str, int], object]
    pixel_max: float
    channels: int
    identity: list  # what the fingerprint covers beyond the options
    notes: list[str] = field(default_factory=list)


@dataclass
class PackResult:
    out_dir: Path
    manifest: dict
    written: int  # shards written by this run
    kept: int  # shards an earlier, interrupted run had completed
    already_packed: bool = False


# ----------------------------------------------------------------------------------------------- sources
def folder_source(spec: DataSpec) -> _Source:
    listing = list_folder(spec)
    splits = split_files(listing, spec)
    channels = folder_channels((p for s in SPLITS for p in splits[s][0]), spec.color_mode)
    mode = "grayscale" if channels == 1 else "rgb"

    def read(split: str, i: int):
        from PIL import Image

        path = splits[split][0][i]
        im = Image.open(path)
        im.load()
        return to_target_mode(im, mode), path

    stats = [channels] + [(os.path.relpath(p, listing.root), os.path.getsize(p), os.stat(p).st_mtime_ns)
                          for s in SPLITS for p in splits[s][0]]
    return _Source(f"image folder {listing.root}", listing.classes,
                   {s: (splits[s][0], splits[s][1]) for s in SPLITS}, read, 255.0, channels, stats)


def arrays_source(spec: DataSpec, data: LoadedData) -> _Source:
    arrays = {"train": (data.x_train, data.y_train), "validation": (data.x_val, data.y_val),
              "test": (data.x_test, data.y_test)}

    def read(split: str, i: int):
        from PIL import Image

        img = arrays[split][0][i]
        return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img), None

    digest = hashlib.sha256()
    for s in SPLITS:
        digest.update(np.ascontiguousarray(arrays[s][0]).tobytes())
        digest.update(np.ascontiguousarray(arrays[s][1]).astype(np.int64).tobytes())
    return _Source(f"data.dataset {spec.dataset!r}", list(data.class_names),
                   {s: (list(range(len(arrays[s][0]))), arrays[s][1]) for s in SPLITS}, read, data.pixel_max,
                   data.input_shape[-1], [spec.model_dump(mode="json"), digest.hexdigest()], list(data.notes))


# ------------------------------------------------------------------------------------------------ encode
def _encode(im, path: Optional[str], opts: PackOptions, channels: int) -> tuple[bytes, tuple[int, int, int]]:
    """One image -> (stored bytes, its [h, w, c]). A JPEG source kept at its size is stored as is (no re-encode)."""
    from PIL import Image

    if opts.resize is not None and im.size != (opts.resize[1], opts.resize[0]):
        im = im.resize((opts.resize[1], opts.resize[0]), Image.Resampling.BILINEAR)
    shape = (im.size[1], im.size[0], channels)
    if opts.encoding == "raw":
        return np.asarray(im, dtype=np.uint8).tobytes(), shape
    if (opts.encoding == "jpeg" and path is not None and opts.resize is None
            and getattr(im, "format", None) == "JPEG" and im.mode == ("L" if channels == 1 else "RGB")):
        with open(path, "rb") as fh:
            return fh.read(), shape
    buf = io.BytesIO()
    if opts.encoding == "jpeg":
        im.save(buf, format="JPEG", quality=opts.quality)
    else:
        im.save(buf, format="PNG", compress_level=1)  # fast; PNG is lossless whatever the level
    return buf.getvalue(), shape


def _example(image: bytes, label: int) -> bytes:
    import tensorflow as tf

    feature = {
        IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


# -------------------------------------------------------------------------------------------------- plan
def _plan(source: _Source, opts: PackOptions) -> list[tuple[str, str, list[int]]]:
    """[(split, shard file, item indices)]: consecutive runs of each split's (already shuffled) order."""
    shards = []
    for split in SPLITS:
        n = len(source.splits[split][0])
        count = max(1, -(-n // opts.shard_size)) if n else 0
        for k in range(count):
            shards.append((split, shard_name(split, k, count), list(range(k * opts.shard_size, min(n, (k + 1) * opts.shard_size)))))
    return shards


def _fingerprint(source: _Source, opts: PackOptions) -> str:
    what = {"format": FORMAT, "version": FORMAT_VERSION, "classes": source.class_names, "identity": source.identity,
            "labels": {s: source.splits[s][1].tolist() for s in SPLITS}, "encoding": opts.encoding,
            "resize": list(opts.resize) if opts.resize else None, "shard_size": opts.shard_size, "quality": opts.quality}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _claim(out: Path, fingerprint: str, description: str) -> Optional[dict]:
    """Make sure `out` is ours to write: empty, or this very pack (finished: its manifest is returned; unfinished:
    resumed). Anything else is refused."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"-o {out}: is a file; expected a directory for the packed dataset")
    out.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, PLAN):
        if (out / name).is_file():
            try:
                found = json.loads((out / name).read_text()).get("fingerprint")
            except (ValueError, OSError, AttributeError):
                found = None
            if found != fingerprint:
                what = "another packed dataset" if name == MANIFEST else "an unfinished pack of another dataset"
                raise BadInputError(
                    f"-o {out}: holds {what} ({name}: fingerprint {str(found)[:12]}...), not {description} with these "
                    "options; expected an empty directory (or the same source and options, to resume or re-check)"
                )
            if name == MANIFEST:
                return json.loads((out / MANIFEST).read_text())
    ours = (".tfrecord", ".sha256.json", ".tmp")
    foreign = sorted(p.name for p in out.iterdir() if p.name != PLAN and not p.name.endswith(ours))
    if foreign:
        raise BadInputError(f"-o {out}: is not empty ({', '.join(foreign[:5])}); expected an empty directory or one "
                            "an interrupted pack of the same data left")
    atomic_write_json(out / PLAN, {"fingerprint": fingerprint, "source": description})
    return None


def _sidecar(out: Path, file: str) -> Path:
    return out / f".{file}.sha256.json"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _completed(out: Path, file: str) -> Optional[dict]:
    """The sidecar of a shard an earlier run finished, when the shard's bytes still match it."""
    side, shard = _sidecar(out, file), out / file
    if not (side.is_file() and shard.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
    except (ValueError, OSError):
        return None
    return meta if shard.stat().st_size == meta.get("bytes") and _file_sha256(shard) == meta.get("sha256") else None


def _write_shard(out: Path, source: _Source, opts: PackOptions, split: str, file: str, items: list[int],
                 on_example: Callable[[int], None]) -> dict:
    import tensorflow as tf

    labels = source.splits[split][1]
    per_class = [0] * len(source.class_names)
    skipped, shapes = [], set()
    tmp = out / f".{file}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for i in items:
                try:
                    im, path = source.read(split, i)
                    blob, shape = _encode(im, path, opts, source.channels)
                except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for a bad file; skip and count
                    skipped.append(f"{source.splits[split][0][i]}: {type(exc).__name__}: {exc}")
                    on_example(1)
                    continue
                if opts.encoding == "raw" and shapes and shape not in shapes:
                    raise BadInputError(f"--encoding raw needs one image size; {source.splits[split][0][i]} is "
                                        f"{list(shape)}, others {list(next(iter(shapes)))}: add --resize HEIGHTxWIDTH")
                shapes.add(shape)
                writer.write(_example(blob, labels[i]))
                per_class[int(labels[i])] += 1
                on_example(1)
        meta = {"file": file, "count": sum(per_class), "per_class": per_class, "bytes": tmp.stat().st_size,
                "sha256": _file_sha256(tmp), "shapes": sorted(list(s) for s in shapes), "skipped": skipped}
        atomic_write_json(_sidecar(out, file), meta)  # before the rename: a visible shard always has its sidecar
        os.replace(tmp, out / file)
    finally:
        tmp.unlink(missing_ok=True)
    return meta


def pack(source: _Source, out_dir: Path, opts: PackOptions,
         progress: Optional[Callable[[int, int], None]] = None) -> PackResult:
    """Write `source` into `out_dir`. `progress(done, total)` is called as examples are written (from threads)."""
    opts.check()
    out = Path(out_dir)
    fingerprint = _fingerprint(source, opts)
    finished = _claim(out, fingerprint, source.description)
    if finished is not None:
        return PackResult(out, finished, 0, 0, already_packed=True)
    plan = _plan(source, opts)
    total = sum(len(items) for _, _, items in plan)
    done = [0]

    def advance(n: int) -> None:
        done[0] += n  # one writer per shard; a lost update only delays the bar
        if progress is not None:
            progress(done[0], total)

    kept: dict[str, dict] = {}
    for split, file, items in plan:
        meta = _completed(out, file)
        if meta is not None:
            kept[file] = meta
            advance(len(items))
    todo = [(split, file, items) for split, file, items in plan if file not in kept]
    if kept:
        log.info("resuming the pack in %s: %d of %d shards were complete and match their checksums", out, len(kept), len(plan))
    for stale in out.glob(".*.tmp"):  # half shards of the interrupted run: never renamed, never read
        stale.unlink(missing_ok=True)
    workers = opts.workers or (os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pack")
    try:
        futures = [pool.submit(_write_shard, out, source, opts, split, file, items, advance) for split, file, items in todo]
        metas = {m["file"]: m for m in (f.result() for f in futures)}
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # shards under way finish or remove their temp file; no others start
        raise
    pool.shutdown()
    metas.update(kept)
    manifest = _manifest(source, opts, plan, metas, fingerprint)
    atomic_write_json(out / MANIFEST, manifest)
    for _, file, _ in plan:
        _sidecar(out, file).unlink(missing_ok=True)
    (out / PLAN).unlink(missing_ok=True)
    return PackResult(out, manifest, len(todo), len(kept))


def _manifest(source: _Source, opts: PackOptions, plan, metas: dict, fingerprint: str) -> dict:
    splits: dict = {}
    shapes: set = set()
    skipped: list[str] = []
    for split in SPLITS:
        files = [f for s, f, _ in plan if s == split]
        shard_metas = [metas[f] for f in files]
        per_class = np.sum([m["per_class"] for m in shard_metas], axis=0).astype(int).tolist() if shard_metas else [0] * len(source.class_names)
        splits[split] = {"count": int(sum(per_class)), "per_class": per_class,
                         "shards": [{k: m[k] for k in ("file", "count", "bytes", "sha256")} for m in shard_metas]}
        for m in shard_metas:
            shapes.update(tuple(s) for s in m["shapes"])
            skipped.extend(m["skipped"])
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint, "source": source.description,
        "class_names": source.class_names,
        "image": {"encoding": opts.encoding, "shape": list(next(iter(shapes))) if len(shapes) == 1 else None,
                  "channels": source.channels, "pixel_max": source.pixel_max,
                  "resize": list(opts.resize) if opts.resize else None, "quality": opts.quality if opts.encoding == "jpeg" else None},
        "splits": splits, "skipped_count": len(skipped), "skipped": skipped[:20], "notes": source.notes,
    }
