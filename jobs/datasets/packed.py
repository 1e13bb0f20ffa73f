"""The packed format `jobctl data pack` writes and `data.dataset: tfrecord` reads: a directory of TFRecord shards of
`tf.train.Example` {"image": encoded bytes, "label": int64} and a `dataset.json` describing them.

dataset.json is written last, so its presence means every shard it lists was complete when it was written; readers
take no other file (a shard still being written has a hidden temp name). Paths go through `tf.io.gfile`, so a
packed directory may be local, on the artifacts volume, or on gs:// (TensorFlow's own GCS filesystem). TensorFlow is
imported only when a packed directory is opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

from jobs.datasets.base import DataUnavailable
from jobs.errors import BadInputError
from jobs.spec import DataSpec

log = logging.getLogger(__name__)

MANIFEST = "dataset.json"
FORMAT = "jobctl.tfrecord"
FORMAT_VERSION = 1
ENCODINGS = ("jpeg", "png", "raw")
SPLITS = ("train", "validation", "test")
IMAGE_KEY, LABEL_KEY = "image", "label"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


@dataclass(frozen=True)
class Shard:
    file: str  # relative to the packed directory
    count: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PackedSplit:
    count: int
    per_class: list[int]
    shards: list[Shard]


@dataclass(frozen=True)
class PackedDataset:
    path: str
    class_names: list[str]
    shape: Optional[list[int]]  # [h, w, c] when every image has it (raw always), else None (sizes vary)
    channels: int
    encoding: str
    pixel_max: float
    splits: dict[str, PackedSplit]
    fingerprint: str

    def shard_paths(self, split: str) -> list[str]:
        return [join(self.path, s.file) for s in self.splits[split].shards]


def join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_manifest(path: str) -> dict:
    """dataset.json of `path` as a dict; DataUnavailable (exit 3) naming the path and the cause when unreadable."""
    gfile = _gfile()
    where = join(path, MANIFEST)
    try:
        if not gfile.exists(where):
            unfinished = gfile.exists(join(path, ".pack-plan.json"))
            raise DataUnavailable(
                f"data.path: {path!r} has no {MANIFEST}"
                + ("; it holds an unfinished pack (interrupted?): run the same `jobctl data pack` again to finish it"
                   if unfinished else "; expected a directory written by `jobctl data pack`")
            )
        with gfile.GFile(where, "rb") as fh:
            text = fh.read()
    except DataUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 -- tf.errors (no credentials, no network, denied) and OSErrors alike
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataUnavailable(f"data.path: cannot read {where!r}: {type(exc).__name__}: {cause}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadInputError(f"data.path: {where!r} is not JSON ({exc}); expected the {MANIFEST} `jobctl data pack` writes") from None


def parse_manifest(path: str, raw: dict) -> PackedDataset:
    where = join(path, MANIFEST)
    if raw.get("format") != FORMAT or raw.get("version") != FORMAT_VERSION:
        raise BadInputError(f"data.path: {where!r} has format {raw.get('format')!r} version {raw.get('version')!r}; "
                            f"expected {FORMAT!r} version {FORMAT_VERSION}")
    try:
        image = raw["image"]
        splits = {
            name: PackedSplit(int(s["count"]), [int(c) for c in s["per_class"]],
                              [Shard(str(h["file"]), int(h["count"]), int(h["bytes"]), str(h["sha256"])) for h in s["shards"]])
            for name, s in raw["splits"].items()
        }
        packed = PackedDataset(path, [str(c) for c in raw["class_names"]], image.get("shape"), int(image["channels"]),
                               str(image["encoding"]), float(image.get("pixel_max", 255)), splits, str(raw["fingerprint"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"data.path: {where!r} lacks or mistypes {exc}; expected the {MANIFEST} `jobctl data pack` "
                            "writes") from None
    if packed.encoding not in ENCODINGS:
        raise BadInputError(f"data.path: {where!r} has image encoding {packed.encoding!r}; expected one of {list(ENCODINGS)}")
    missing = [s for s in ("train", "test") if s not in splits or not splits[s].count]
    if missing:
        raise BadInputError(f"data.path: {where!r} has no {' and no '.join(missing)} examples; expected train and test splits")
    return packed


def sha256_of(path: str, chunk: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    with _gfile().GFile(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def check_shards(packed: PackedDataset, verify_checksums: bool) -> None:
    """Every shard dataset.json lists is there with its size (a missing one: exit 3), and, when asked, its sha256
    (a mismatch: exit 2, the shard is not the one packed). Before training, so no epoch stops half-way."""
    gfile = _gfile()
    shards = [(join(packed.path, s.file), s) for split in packed.splits.values() for s in split.shards]

    def check(item) -> Optional[str]:
        full, shard = item
        try:
            size = gfile.stat(full).length
        except Exception:  # noqa: BLE001 -- NotFoundError locally and on gs://
            return f"missing:{full}"
        if size != shard.bytes:
            return f"shard {full!r} has {size} bytes; {MANIFEST} says {shard.bytes} (truncated or replaced)"
        if verify_checksums:
            found = sha256_of(full)
            if found != shard.sha256:
                return f"shard {full!r} has sha256 {found}; {MANIFEST} says {shard.sha256} (corrupt or replaced)"
        return None

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="shard-check") as pool:
        problems = [p for p in pool.map(check, shards) if p]
    missing = [p.split(":", 1)[1] for p in problems if p.startswith("missing:")]
    if missing:
        raise DataUnavailable(f"data.path: {len(missing)} shard{'s' if len(missing) != 1 else ''} listed in "
                              f"{join(packed.path, MANIFEST)!r} not found: {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}; expected every shard `jobctl data pack` wrote")
    if problems:
        raise BadInputError("data.path: " + "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
                            + " -- pack the data again (or set data.verify_checksums: false to skip the check)")


def open_packed(spec: DataSpec) -> PackedDataset:
    """Read and check a packed directory for `data.dataset: tfrecord`: manifest, classes, shards."""
    path = str(spec.path).rstrip("/")
    packed = parse_manifest(path, read_manifest(path))
    if spec.class_names is not None and list(spec.class_names) != packed.class_names:
        raise BadInputError(
            f"data.class_names: {list(spec.class_names)} disagree with the classes of the packed data "
            f"{packed.class_names} ({join(path, MANIFEST)}); expected the same names in the same order (the labels "
            "were fixed at pack time), or no data.class_names"
        )
    check_shards(packed, spec.verify_checksums)
    return packed
