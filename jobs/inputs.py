"""What training reads: in-memory arrays (jobs.pipeline) or streamed files (jobs.streaming), chosen here.

- `data.dataset: tfrecord` (packed shards) always streams.
- An image folder is decoded into memory when its decoded size (images x H x W x C bytes, estimated from the file
  count and the training size) fits `data.in_memory_max_bytes`, and streams from disk above it. In memory is the
  fastest path for data that fit; streaming keeps memory flat however large the folder is.
- The other datasets (digits, the Keras datasets, npz) are arrays already: in memory.

The choice and its reason are logged and kept in `TrainingInputs.reason`. Training uses one interface either way.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from jobs.spec import AugmentationSpec, DataSpec

log = logging.getLogger(__name__)

IN_MEMORY, STREAMING = "in-memory", "streaming"
ADAPT_SAMPLE = 2048  # streamed data: images the Normalization layer adapts on (preprocessing.standardize)


def _gb(n: float) -> str:
    # Both sides of the comparison must stay readable: "0.0 MB > 0.0 MB" would not say why a small folder streams.
    if n >= 1e8:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{int(n):,} bytes"


@dataclass
class TrainingInputs:
    mode: str  # IN_MEMORY | STREAMING
    reason: str
    class_names: list[str]
    input_shape: tuple[int, int, int]
    pixel_max: float
    counts: dict[str, int]  # train / validation / test examples (all workers together)
    notes: list[str] = field(default_factory=list)
    loaded: object = None  # LoadedData, in memory
    streams: dict = field(default_factory=dict)  # split -> jobs.streaming.StreamSource, streaming
    spec: Optional[DataSpec] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_dataset(self, batch_size: int, *, seed: int, augmentation: Optional[AugmentationSpec],
                      shuffle_buffer: Optional[int], deterministic: bool, from_epoch: Optional[int]):
        if self.mode == IN_MEMORY:
            from jobs.pipeline import make_dataset

            d = self.loaded
            return make_dataset(d.x_train, d.y_train, self.num_classes, batch_size, training=True, seed=seed,
                                augmentation=augmentation, shuffle_buffer=shuffle_buffer, deterministic=deterministic,
                                from_epoch=from_epoch)
        return self.streams["train"].dataset(
            self.num_classes, batch_size, training=True, seed=seed, augmentation=augmentation,
            shuffle_buffer=self.spec.stream_shuffle_buffer, deterministic=deterministic, cache=self.spec.cache,
            from_epoch=from_epoch, max_examples=self.spec.max_train_examples if self.spec.dataset == "tfrecord" else None)

    def eval_dataset(self, split: str, batch_size: int, *, seed: int):
        """validation or test batches, in order."""
        if self.mode == IN_MEMORY:
            from jobs.pipeline import make_dataset

            d = self.loaded
            x, y = {"validation": (d.x_val, d.y_val), "test": (d.x_test, d.y_test)}[split]
            return make_dataset(x, y, self.num_classes, batch_size, training=False, seed=seed)
        return self.streams[split].dataset(self.num_classes, batch_size, training=False, seed=seed,
                                           cache=self.spec.cache)

    def images(self, split: str, k: int) -> np.ndarray:
        """The first `k` images of a split (uint8): warmup requests for the export."""
        if self.mode == IN_MEMORY:
            return {"train": self.loaded.x_train, "validation": self.loaded.x_val, "test": self.loaded.x_test}[split][:k]
        return self.streams[split].take_images(min(k, self.streams[split].examples))

    def adapt_sample(self) -> np.ndarray:
        """What the Normalization layer adapts on: every training image in memory, a sample when streaming."""
        if self.mode == IN_MEMORY:
            return self.loaded.x_train
        return self.images("train", ADAPT_SAMPLE)

    def skipped(self) -> dict[str, int]:
        """What corrupt_records: skip dropped: item -> examples it spans. One file can be in two streams
        (validation.use_test validates on the test split): it is counted once."""
        return {item: n for s in self.streams.values() for item, n in s.skips.records.items()}

    @contextmanager
    def corrupt_data_is_bad_input(self):
        """Around training: a record or file that stopped a streamed pass (data.corrupt_records: error) becomes one
        BadInputError (exit 2, not retried) naming it, instead of TensorFlow's failed assertion (exit 1, retried;
        a retry would meet the same bytes)."""
        try:
            yield
        except Exception as exc:
            for source in self.streams.values():
                if source.skips.failed:
                    from jobs.errors import BadInputError

                    raise BadInputError(
                        f"data.path: {source.skips.failed[0]} does not decode (corrupt, or not an image); expected "
                        f"{source.expected()}, or set data.corrupt_records: skip to skip and count such records"
                    ) from exc
            raise


def _in_memory(spec: DataSpec, reason: str) -> TrainingInputs:
    from jobs.datasets import load_dataset

    d = load_dataset(spec)
    return TrainingInputs(IN_MEMORY, reason, d.class_names, d.input_shape, d.pixel_max,
                          {"train": len(d.x_train), "validation": len(d.x_val), "test": len(d.x_test)}, list(d.notes),
                          loaded=d, spec=spec)


def _packed(spec: DataSpec, num_workers: int, worker_index: int) -> TrainingInputs:
    from jobs.datasets.packed import open_packed
    from jobs.streaming import packed_source

    packed = open_packed(spec)
    notes = []
    if spec.resize is not None:
        size = tuple(spec.resize)
    elif packed.shape is not None:
        size = tuple(packed.shape[:2])
    else:
        from jobs.errors import BadInputError

        raise BadInputError(f"data.resize: the packed images of {spec.path!r} differ in size; expected data.resize "
                            "[height, width] (or pack with --resize)")
    # data.color_mode applies to packed images as to a folder: 'keep' keeps what was packed.
    channels = {"grayscale": 1, "rgb": 3}.get(spec.color_mode, packed.channels)
    val_split = "test" if spec.validation.use_test else "validation"
    if not packed.splits.get("validation") or not packed.splits["validation"].count:
        val_split = "test"
    streams = {
        "train": packed_source(packed, "train", size, channels=channels, num_workers=num_workers,
                               worker_index=worker_index, corrupt_records=spec.corrupt_records),
        "validation": packed_source(packed, val_split, size, channels=channels, corrupt_records=spec.corrupt_records,
                                    shard_by_worker=False),
        "test": packed_source(packed, "test", size, channels=channels, corrupt_records=spec.corrupt_records,
                              shard_by_worker=False),
    }
    counts = {"train": packed.splits["train"].count, "validation": packed.splits[val_split].count,
              "test": packed.splits["test"].count}
    if spec.max_train_examples is not None:
        counts["train"] = min(counts["train"], spec.max_train_examples)
    notes.append("the train/validation/test split was fixed when the data were packed (data.validation and "
                 "data.test_fraction apply at pack time; validation.use_test still validates on the test split)")
    reason = (f"packed TFRecord shards stream from {spec.path} ({len(packed.splits['train'].shards)} train shards"
              + (f", {len(streams['train'].files)} of them read by worker {worker_index} of {num_workers}" if num_workers > 1 else "")
              + f"; {packed.encoding} images decoded to {size[0]}x{size[1]}x{channels})")
    return TrainingInputs(STREAMING, reason, packed.class_names, (size[0], size[1], channels), packed.pixel_max,
                          counts, notes, streams=streams, spec=spec)


def _folder(spec: DataSpec, num_workers: int, worker_index: int) -> TrainingInputs:
    from jobs.datasets.folder_files import list_folder, split_files
    from jobs.datasets.image_folder import DEFAULT_IMAGE_FOLDER_SIZE, folder_channels

    listing = list_folder(spec)
    size = tuple(spec.resize) if spec.resize is not None else DEFAULT_IMAGE_FOLDER_SIZE
    channels = folder_channels((p for p, _ in listing.train + listing.test), spec.color_mode)
    n = len(listing.train) + len(listing.test)
    decoded = n * size[0] * size[1] * channels
    if decoded <= spec.in_memory_max_bytes:
        return _in_memory(spec, f"image folder decoded into memory: {n} images x {size[0]}x{size[1]}x{channels} = "
                                f"{_gb(decoded)} <= data.in_memory_max_bytes ({_gb(spec.in_memory_max_bytes)})")
    from jobs.streaming import folder_source

    splits = split_files(listing, spec)
    notes = [] if spec.resize is not None else [f"data.resize is not set: images are resized to {size[0]}x{size[1]}"]
    if spec.color_mode == "keep" and channels == 1:
        notes.append("every image is grey: one channel (data.color_mode: keep)")
    streams = {
        "train": folder_source(*splits["train"], size, channels, num_workers=num_workers, worker_index=worker_index,
                               corrupt_records=spec.corrupt_records),
        "validation": folder_source(*splits["validation"], size, channels, corrupt_records=spec.corrupt_records,
                                    shard_by_worker=False),
        "test": folder_source(*splits["test"], size, channels, corrupt_records=spec.corrupt_records, shard_by_worker=False),
    }
    reason = (f"image folder streams from disk: {n} images x {size[0]}x{size[1]}x{channels} = {_gb(decoded)} decoded "
              f"> data.in_memory_max_bytes ({_gb(spec.in_memory_max_bytes)})")
    counts = {s: len(splits[s][0]) for s in ("train", "validation", "test")}
    return TrainingInputs(STREAMING, reason, listing.classes, (size[0], size[1], channels), 255.0, counts, notes,
                          streams=streams, spec=spec)


def load_inputs(spec: DataSpec, *, num_workers: int = 1, worker_index: int = 0) -> TrainingInputs:
    """The spec's data, in memory or streaming (see the module docstring); `worker_index` of `num_workers` reads
    only its own share of streamed training files."""
    if spec.dataset == "tfrecord":
        inputs = _packed(spec, num_workers, worker_index)
    elif spec.dataset == "image_folder":
        inputs = _folder(spec, num_workers, worker_index)
    else:
        inputs = _in_memory(spec, f"{spec.dataset} arrays load into memory")
    log.info("data: %s: %s", inputs.mode, inputs.reason)
    return inputs
