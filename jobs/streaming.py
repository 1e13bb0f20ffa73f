"""`tf.data` pipelines that stream images from disk (or gs://) instead of holding them in memory: packed TFRecord
shards (`jobctl data pack`) and image folders.

Per pass: this worker's files in an order drawn from (seed, epoch), read by a parallel interleave (several shards at
once), decoded and resized to uint8 in a parallel map, a shuffle buffer of `data.stream_shuffle_buffer` decoded
images, batches, then the host augmentation map (jobs.pipeline.host_augmentation) and prefetch. Memory is the
buffer plus the interleave's read-ahead: it does not grow with the dataset.

Workers split the data by file (each reads only its own shards or images), so the strategy must not shard again:
the datasets carry AutoShardPolicy.OFF. A record or file that does not decode is found by its missing position
(decoded elements carry their position; a gap is a dropped one): `data.corrupt_records: error` stops naming the
shard and record index (or the file), `skip` logs it and counts it in `SkipLog`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from jobs.datasets.packed import IMAGE_KEY, LABEL_KEY, PackedDataset
from jobs.pipeline import host_augmentation
from jobs.spec import AugmentationSpec

log = logging.getLogger(__name__)

_NO_END = 2**62
_SENTINEL_LABEL = -1


@dataclass
class SkipLog:
    """Records and files that did not decode: those `data.corrupt_records: skip` dropped (counted, each one logged
    when met), and under `error` the one that stopped the pass (TensorFlow's own error cannot say which)."""

    items: list[str] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)  # item -> examples it spans ("record 4 to record 7": 4)
    failed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, records: int = 1) -> None:
        # Every pass meets the same bad record again (and the pipeline reads ahead): count and log it once.
        with self._lock:
            if what in self.records:
                return
            self.items.append(what)
            self.records[what] = records
            total = sum(self.records.values())
        log.warning("skipped %s: it does not decode (data.corrupt_records: skip; %d skipped so far)", what, total)

    def fail(self, what: str) -> None:
        with self._lock:
            self.failed.append(what)

    @property
    def count(self) -> int:
        return len(self.items)


def pillow_luma(rgb: tf.Tensor) -> tf.Tensor:
    """uint8 [..., 3] -> uint8 [..., 1] with Pillow's integer ITU-R 601 luma (Image.convert("L")), so a grey image
    streamed is the one the in-memory loader makes (TensorFlow's own conversions round differently)."""
    x = tf.cast(rgb, tf.int32)
    luma = (x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) // 65536
    return tf.cast(luma, tf.uint8)[..., None]


@dataclass(frozen=True)
class Decoder:
    """Encoded image bytes -> uint8 [height, width, channels] at the training size.

    Channels follow jobs.datasets.image_folder's rule: grey is replicated to RGB; colour becomes one channel by
    Pillow's luma; alpha is dropped; conversion happens before the resize, as in memory."""

    encoding: str  # jpeg | png | raw | any (a folder: whatever tf.io.decode_image reads)
    size: tuple[int, int]
    channels: int  # what the model gets
    stored_shape: Optional[tuple[int, int, int]] = None  # raw: required; others: skips the resize when it matches
    source_channels: Optional[int] = None  # what the bytes hold when known (packed), None: any (a folder)

    def _decode(self, blob: tf.Tensor) -> tf.Tensor:
        # Decoding straight to the model's channels is exact only when the source has them already.
        c = self.channels if self.source_channels == self.channels else 3
        if self.encoding == "raw":
            image = tf.reshape(tf.io.decode_raw(blob, tf.uint8), self.stored_shape)
            return image if self.stored_shape[-1] == c else tf.tile(image, [1, 1, c])
        if self.encoding == "jpeg":
            return tf.io.decode_jpeg(blob, channels=c)
        if self.encoding == "png":
            return tf.io.decode_png(blob, channels=c)
        return tf.io.decode_image(blob, channels=c, expand_animations=False)

    def __call__(self, blob: tf.Tensor) -> tf.Tensor:
        image = self._decode(blob)
        if self.channels == 1 and self.source_channels != 1:
            image = pillow_luma(image)
        if self.stored_shape is None or tuple(self.stored_shape[:2]) != tuple(self.size):
            image = tf.image.resize(image, self.size, method="bilinear")
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        return tf.ensure_shape(image, [*self.size, self.channels])


def _checked(positioned: tf.data.Dataset, expected: int, name_of: Callable[[tf.Tensor], tf.Tensor], mode: str,
             skips: SkipLog, decoder: Decoder) -> tf.data.Dataset:
    """(position, image, label) elements of which the undecodable ones were dropped -> (image, label), with every
    dropped position (a gap, or missing ones at the end) reported by `mode`."""
    sentinel = tf.data.Dataset.from_tensors((tf.cast(expected, tf.int64), tf.zeros([*decoder.size, decoder.channels], tf.uint8),
                                             tf.constant(_SENTINEL_LABEL, tf.int64)))

    def note(first, last, records):
        first, last, records = first.numpy().decode("utf8", "replace"), last.numpy().decode("utf8", "replace"), int(records)
        skips.add(first if records == 1 else f"{first} to {last}", records)
        return True

    def failed(first):
        skips.fail(first.numpy().decode("utf8", "replace"))
        return True

    def check(next_expected, element):
        position, image, label = element
        gap = position > next_expected
        # Names are formatted only on a gap (the branch), never per element.
        if mode == "error":
            def stop():
                what = name_of(next_expected)
                recorded = tf.py_function(failed, [what], tf.bool)
                with tf.control_dependencies([recorded]):
                    ok = tf.debugging.Assert(tf.constant(False), [tf.strings.join([
                        what, " does not decode (corrupt or not an image); data.corrupt_records: skip skips and "
                        "counts such records"])])
                with tf.control_dependencies([ok]):
                    return tf.identity(recorded)

            reported = tf.cond(gap, stop, lambda: tf.constant(True))
            with tf.control_dependencies([reported]):
                position = tf.identity(position)
        else:
            reported = tf.cond(gap, lambda: tf.py_function(
                note, [name_of(next_expected), name_of(position - 1), position - next_expected], tf.bool),
                lambda: tf.constant(True))
            with tf.control_dependencies([reported]):
                position = tf.identity(position)
        return position + 1, (image, label)

    return (positioned.concatenate(sentinel).scan(tf.constant(0, tf.int64), check)
            .filter(lambda image, label: label != _SENTINEL_LABEL))


def _shard_examples(path: tf.Tensor, count: tf.Tensor, decoder: Decoder, mode: str, skips: SkipLog,
                    deterministic: Optional[bool]) -> tf.data.Dataset:
    features = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string), LABEL_KEY: tf.io.FixedLenFeature([], tf.int64)}

    def decode(position, record):
        example = tf.io.parse_single_example(record, features)
        return position, decoder(example[IMAGE_KEY]), example[LABEL_KEY]

    positioned = (tf.data.TFRecordDataset(path).enumerate()
                  .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors())
    return _checked(positioned, count, lambda i: tf.strings.join(["record ", tf.strings.as_string(i), " of shard ", path]), mode, skips, decoder)


def worker_files(files: Sequence, num_workers: int, worker_index: int, what: str) -> list:
    """This worker's share of `files` (every num_workers-th): each worker reads only its own, one epoch covers each
    file once. Fewer files than workers is an error before training (a worker would have nothing to read)."""
    if len(files) < num_workers:
        from jobs.errors import BadInputError

        raise BadInputError(f"data.path: {what} has {len(files)} file(s) for {num_workers} workers; expected at least "
                            "one per worker (pack with a smaller --shard-size to get more shards)")
    return list(files[worker_index::num_workers])


@dataclass
class StreamSource:
    """One split, streamable: this worker's files and what they hold."""

    files: list[str]
    counts: list[int]  # examples per file (1 for image files)
    labels: Optional[np.ndarray]  # image files: the label of each; shards carry theirs
    decoder: Decoder
    packed: bool
    corrupt_records: str = "error"
    skips: SkipLog = field(default_factory=SkipLog)

    @property
    def examples(self) -> int:
        return int(sum(self.counts))

    def expected(self) -> str:
        """What a record or file of this source must be, and how to mend one that is not (for the error)."""
        if self.packed:
            shape = "x".join(map(str, self.decoder.stored_shape)) + " " if self.decoder.stored_shape else ""
            return (f"a tf.train.Example holding {IMAGE_KEY!r} ({self.decoder.encoding} bytes of a {shape}image) and "
                    f"{LABEL_KEY!r} (int64), as `jobctl data pack` writes; pack the data again")
        return "an image file TensorFlow decodes (JPEG, PNG, GIF or BMP); replace or remove the file"

    def _pass(self, order: tf.Tensor, deterministic: Optional[bool]) -> tf.data.Dataset:
        """Every example of this worker's files once, files in `order` (a permutation of their indices)."""
        files = tf.constant(self.files)
        if self.packed:
            counts = tf.constant(self.counts, tf.int64)
            shards = tf.data.Dataset.from_tensor_slices(order)
            return shards.interleave(
                lambda i: _shard_examples(files[i], counts[i], self.decoder, self.corrupt_records, self.skips, deterministic),
                cycle_length=min(len(self.files), 8), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
        labels = tf.constant(np.asarray(self.labels, dtype=np.int64))
        decoder = self.decoder

        def read(position):
            i = order[position]
            return position, decoder(tf.io.read_file(files[i])), labels[i]

        positioned = (tf.data.Dataset.range(len(self.files))
                      .map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors())
        return _checked(positioned, len(self.files), lambda p: tf.strings.join(["file ", files[order[p]]]),
                        self.corrupt_records, self.skips, decoder)

    def _order(self, seed, epoch, shuffle: bool) -> tf.Tensor:
        n = len(self.files)
        if not shuffle:
            return tf.range(n, dtype=tf.int64)
        return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64),
                                                        seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))

    def dataset(self, num_classes: int, batch_size: int, *, training: bool, seed: int,
                augmentation: Optional[AugmentationSpec] = None, shuffle_buffer: int = 2048,
                deterministic: bool = False, cache: bool = False, from_epoch: Optional[int] = None,
                max_examples: Optional[int] = None) -> tf.data.Dataset:
        """(images, one-hot labels) batches, the counterpart of jobs.pipeline.make_dataset (uint8 images unless
        augmentation resampled them).

        `from_epoch` None: one pass (a new file order and shuffle on each new iteration). An epoch number: the passes
        of every epoch from that one on, endlessly, each pass's file order and shuffle seeded by (seed, epoch)."""
        det = True if deterministic else None
        source, crop_to = self, None
        if training and augmentation is not None and augmentation.crop_from is not None:
            # Decoded at crop_from (no resize when the pack stored that size); the augmentation cuts data.resize.
            crop_to = self.decoder.size
            source = replace(self, decoder=replace(self.decoder, size=tuple(augmentation.crop_from)))
        aug = host_augmentation(augmentation, training=training, seed=seed, crop_to=crop_to)

        def to_model_inputs(images, labels):  # uint8 unless augmentation resampled: as jobs.pipeline.make_dataset
            return (aug(images) if aug is not None else images), tf.one_hot(labels, num_classes)

        def one_pass(epoch, examples=None):
            if examples is None:
                examples = source._pass(source._order(seed, epoch, training and max_examples is None), det)
                if max_examples is not None:
                    examples = examples.take(max_examples)
            if training:
                examples = examples.shuffle(shuffle_buffer, seed=tf.cast(seed, tf.int64) * 1_000_003 + epoch)
            return examples.batch(batch_size)

        cached = source._pass(source._order(seed, 0, False), det).cache() if cache else None
        if cached is not None and max_examples is not None:
            cached = cached.take(max_examples)
        if from_epoch is not None:
            passes = tf.data.Dataset.range(from_epoch, _NO_END).flat_map(lambda e: one_pass(e, cached))
        else:
            draw = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
            passes = draw.flat_map(lambda e: one_pass(e % (2**31), cached))
        ds = passes.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE if aug is not None else None,
                        deterministic=det if aug is not None else None)
        if not training and from_epoch is None and self.corrupt_records == "error" and max_examples is None:
            # One pass of exactly these batches (a record that does not decode stops it first): Keras, told the
            # count, ends validation cleanly instead of warning "ran out of data; interrupting training" on a
            # multi-step call each epoch. (skip: the count may be lower, so it stays unknown.)
            ds = ds.apply(tf.data.experimental.assert_cardinality(-(-self.examples // batch_size)))
        options = tf.data.Options()
        # The files are already this worker's own: the strategy must not shard them again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        if deterministic:
            options.deterministic = True
        return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

    def take_images(self, k: int) -> np.ndarray:
        """The first `k` images of this split in stored order, as uint8 (warmup requests, normalization samples)."""
        if k <= 0:
            return np.zeros((0, *self.decoder.size, self.decoder.channels), np.uint8)
        ds = self._pass(tf.range(len(self.files), dtype=tf.int64), True).take(k).batch(k)
        return next(iter(ds))[0].numpy() if self.examples else np.zeros((0, *self.decoder.size, self.decoder.channels), np.uint8)


def packed_source(packed: PackedDataset, split: str, size: tuple[int, int], *, channels: Optional[int] = None,
                  num_workers: int = 1, worker_index: int = 0, corrupt_records: str = "error",
                  shard_by_worker: bool = True) -> StreamSource:
    shards = packed.splits[split].shards
    chosen = worker_files(list(range(len(shards))), num_workers, worker_index, f"{packed.path} ({split} split)") \
        if shard_by_worker and num_workers > 1 else list(range(len(shards)))
    stored = tuple(packed.shape) if packed.shape else None
    decoder = Decoder(packed.encoding, tuple(size), channels or packed.channels, stored, packed.channels)
    paths = packed.shard_paths(split)
    return StreamSource([paths[i] for i in chosen], [shards[i].count for i in chosen], None, decoder, True, corrupt_records)


def folder_source(files: Sequence[str], labels: np.ndarray, size: tuple[int, int], channels: int, *,
                  num_workers: int = 1, worker_index: int = 0, corrupt_records: str = "error",
                  shard_by_worker: bool = True) -> StreamSource:
    index = list(range(len(files)))
    if shard_by_worker and num_workers > 1:
        index = worker_files(index, num_workers, worker_index, "the image folder")
    return StreamSource([str(files[i]) for i in index], [1] * len(index), np.asarray(labels)[index],
                        Decoder("any", tuple(size), channels), False, corrupt_records)
