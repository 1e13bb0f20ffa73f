"""`tf.data` input pipelines: batches of shuffled indices, gathered from in-memory arrays, augmentation inside `map`
(vectorized per batch), prefetch.

No Python runs per step, and no tf.data op runs per example: this is what makes the input pipeline faster than
numpy arrays into `fit` or ImageDataGenerator (bench/bench_pipeline.py). Labels become one-hot here so that label
smoothing works with the categorical loss. Images stay uint8 unless augmentation resamples them: the model's input
casts them on the accelerator (4x fewer bytes to move, and no host pass spent on the cast).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from jobs.spec import AugmentationSpec


def _random_affine(images: tf.Tensor, aug: AugmentationSpec, seed: int) -> tf.Tensor:
    """Flip, rotation, zoom and translation composed into ONE projective transform per image.

    Keras' RandomFlip/RandomRotation/RandomZoom/RandomTranslation layers each resample every image; composing
    them resamples once (bench/bench_pipeline.py measured the input pipeline 2x faster than with the layers; the
    dogs recipe's pipeline is 6.2x faster than ImageDataGenerator's, 2026-11-22). Ranges follow the Keras layers: rotation is a fraction of a full turn, zoom and
    translation fractions of the image size; pixels outside the image repeat the nearest edge.
    """
    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    ones = tf.ones([b])
    turn = aug.rotation * 2 * math.pi
    angle = tf.random.uniform([b], -turn, turn, seed=seed) if aug.rotation else tf.zeros([b])
    zoom = tf.random.uniform([b], 1 - aug.zoom, 1 + aug.zoom, seed=seed + 1) if aug.zoom else ones
    if aug.translation:
        tx = tf.random.uniform([b], -aug.translation, aug.translation, seed=seed + 2) * w
        ty = tf.random.uniform([b], -aug.translation, aug.translation, seed=seed + 3) * h
    else:
        tx = ty = tf.zeros([b])

    def coin(offset):
        return tf.where(tf.random.uniform([b], seed=seed + offset) < 0.5, -1.0, 1.0)

    flip_x = coin(4) if aug.flip in ("horizontal", "horizontal_and_vertical") else ones
    flip_y = coin(5) if aug.flip in ("vertical", "horizontal_and_vertical") else ones
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # Output pixel (x, y) samples input (a0 x + a1 y + a2, b0 x + b1 y + b2): rotate/zoom/flip about the centre.
    a0, a1, b0, b1 = cos * flip_x, -sin * flip_y, sin * flip_x, cos * flip_y
    zeros = tf.zeros([b])
    matrix = tf.stack([a0, a1, cx - a0 * cx - a1 * cy + tx, b0, b1, cy - b0 * cx - b1 * cy + ty, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=matrix, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST",
    )


def _crop_and_flip(images: tf.Tensor, aug: AugmentationSpec, seed: int,
                   crop_to: Optional[Sequence[int]]) -> tf.Tensor:
    """A random `crop_to` window of each image at `crop_from` (streamed images arrive at it; in-memory arrays, kept at
    data.resize, are enlarged first), then the flips: slices and mirrored copies, nothing resampled. Per image, in the
    batch's own dtype: on uint8, a 224 window of 256 plus a flip runs at 3.6k images/s on one core, where batched
    gathers, reverse and where on float32 managed 180-1,100 (measured 2026-12-03)."""
    if crop_to is not None and tuple(images.shape[1:3]) != tuple(aug.crop_from):
        images = tf.image.resize(images, aug.crop_from, method="bilinear")
    horizontal = aug.flip in ("horizontal", "horizontal_and_vertical")
    vertical = aug.flip in ("vertical", "horizontal_and_vertical")

    def one(image):
        if crop_to is not None:
            image = tf.image.random_crop(image, [*crop_to, image.shape[-1]], seed=seed + 7)
        if horizontal:
            image = tf.image.random_flip_left_right(image, seed=seed + 4)
        if vertical:
            image = tf.image.random_flip_up_down(image, seed=seed + 5)
        return image

    shape = [*(crop_to if crop_to is not None else images.shape[1:3]), images.shape[-1]]
    return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(shape, images.dtype))


def augmentation_fn(aug: AugmentationSpec, seed: int,
                    crop_to: Optional[Sequence[int]] = None) -> Optional[Callable[[tf.Tensor], tf.Tensor]]:
    """A batch -> batch function for training batches, or None when the spec asks for no augmentation. Crops and
    flips keep the batch's dtype (uint8 stays uint8); rotation, zoom, translation and contrast give float32.

    `crop_to` (data.resize) applies `crop_from`: the host passes it; the device step does not, since a crop sets the
    batch's shape and must happen before the batch reaches the model."""
    if not aug.enabled:
        return None
    crop = crop_to if aug.crop_from is not None else None
    resampling = any((aug.rotation, aug.zoom, aug.translation))
    copying = crop is not None or (aug.flip != "none" and not resampling)
    contrast = keras.layers.RandomContrast(aug.contrast, seed=seed + 6) if aug.contrast else None

    def augment(images):
        if copying:  # in the batch's dtype: uint8 moves a quarter of float32's bytes
            images = _crop_and_flip(images, aug if not resampling else aug.model_copy(update={"flip": "none"}),
                                    seed, crop)
        if resampling or contrast is not None:
            images = tf.cast(images, tf.float32)
        if resampling:
            images = _random_affine(images, aug, seed)
        if contrast is not None:
            images = contrast(images, training=True)
        return images

    return augment


def host_augmentation(augmentation: Optional[AugmentationSpec], *, training: bool, seed: int,
                      crop_to: Optional[Sequence[int]] = None) -> Optional[Callable[[tf.Tensor], tf.Tensor]]:
    """The augmentation the input pipeline applies to training batches on the host, or None. Every pipeline (in-memory
    arrays here, streamed shards and folders in jobs/streaming.py) takes it from here: the one place that decides
    whether augmentation runs on the host."""
    if not training or augmentation is None:
        return None
    if getattr(augmentation, "placement", "host") == "host":
        return augmentation_fn(augmentation, seed, crop_to)
    # placement "device": the training step applies the rest (jobs/training/device_augmentation.py); the crop stays.
    if augmentation.crop_from is not None and crop_to is not None:
        return augmentation_fn(AugmentationSpec(crop_from=augmentation.crop_from), seed, crop_to)
    return None


def _batched_order(n: int, batch_size: int, *, training: bool, seed: int, shuffle_buffer: Optional[int],
                   drop_remainder: bool, from_epoch: Optional[int] = None) -> tf.data.Dataset:
    """Batches of example indices, one element per batch.

    The default (`shuffle_buffer` None or >= n) is a uniform permutation per pass, as Keras' `fit(x, y,
    shuffle=True)` does: one stateless shuffle of n indices, cut into batches without a per-example tf.data op.
    A smaller buffer keeps tf.data's windowed shuffle of indices (1: the order as stored).

    `from_epoch` None: one pass, and each new iteration of it (a `repeat`, a fresh iterator) draws a new order from
    `Dataset.random`. An epoch number: every pass from that epoch on, endlessly, each pass's order a function of
    (seed, epoch) alone, so a run resumed at epoch k trains on the orders an uninterrupted run would have used.
    Either way every worker draws the same order (same seed), so workers sharding the batches never see one
    example twice.
    """
    full_shuffle = training and (shuffle_buffer is None or shuffle_buffer >= n)
    if full_shuffle:
        full = n - n % batch_size
        tail = full < n and not drop_remainder  # a partial last batch

        def one_pass(draw):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), draw]))
            batches = tf.data.Dataset.from_tensor_slices(tf.reshape(order[:full], [-1, batch_size]))
            return batches.concatenate(tf.data.Dataset.from_tensors(order[full:])) if tail else batches

        if from_epoch is not None:
            return tf.data.Dataset.range(from_epoch, _NO_END).flat_map(one_pass)
        # flat_map hides the count; Keras (progress, steps per epoch of a finite dataset) reads it.
        count = full // batch_size + int(tail)
        return (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1).flat_map(one_pass)
                .apply(tf.data.experimental.assert_cardinality(count)))
    def windowed_pass(shuffle_seed, reshuffle: bool = False):
        order = tf.data.Dataset.range(n)
        if training and shuffle_buffer > 1:
            order = order.shuffle(shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
        return order.batch(batch_size, drop_remainder=drop_remainder)

    def epoch_pass(epoch):
        # TensorFlow's get_seed compares (graph seed, op seed) with (0, 0): under a global seed of 0 (a spec with
        # seed: 0) that turns the op-seed tensor into a Python bool and tracing fails. A fixed non-zero graph seed for
        # this traced function also makes each epoch's order a function of (seed, epoch) alone, whatever was set
        # globally before.
        tf.compat.v1.get_default_graph().seed = seed % (2**31 - 2) + 1
        return windowed_pass(tf.constant(seed, tf.int64) * 1_000_003 + epoch)

    if from_epoch is not None:
        return tf.data.Dataset.range(from_epoch, _NO_END).flat_map(epoch_pass)
    return windowed_pass(seed, reshuffle=True)


_NO_END = 2**62  # epochs: "forever" for Dataset.range


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int,
    *,
    training: bool,
    seed: int,
    augmentation: Optional[AugmentationSpec] = None,
    shuffle_buffer: Optional[int] = None,
    deterministic: bool = False,
    drop_remainder: bool = False,
    prefetch: int = tf.data.AUTOTUNE,
    from_epoch: Optional[int] = None,
) -> tf.data.Dataset:
    """(images, one-hot labels) batches of in-memory arrays; `shuffle_buffer` None: a full shuffle per pass. Images
    keep the arrays' dtype (uint8) unless augmentation resamples them (float32); the model casts.

    `from_epoch` None: one pass (reshuffled on each new iteration). An epoch number: the passes of every epoch from
    that one on, endlessly, each pass's order fixed by (seed, epoch): what `fit` with `steps_per_epoch` takes, and
    what makes a resumed run see the orders of an uninterrupted one.

    The arrays stay as they are stored (uint8 images: 4x less memory than float32) in two tensors; each batch is a
    gather of its indices, cast inside the map. Per batch, not per example: no tf.data op runs once per image.
    """
    images = tf.constant(x)
    labels = tf.constant(np.asarray(y).astype("int64"))
    order = _batched_order(len(x), batch_size, training=training, seed=seed, shuffle_buffer=shuffle_buffer,
                           drop_remainder=drop_remainder, from_epoch=from_epoch)
    # The arrays are at data.resize: the window a crop (augmentation.crop_from) cuts.
    aug = host_augmentation(augmentation, training=training, seed=seed, crop_to=x.shape[1:3])

    def to_model_inputs(indices):
        # Images leave the host as stored (uint8) unless augmentation made floats: the model's input casts them on
        # the accelerator, and the host neither spends a pass on the cast nor ships 4x the bytes.
        batch = tf.gather(images, indices)
        return (aug(batch) if aug is not None else batch), tf.one_hot(tf.gather(labels, indices), num_classes)

    # A gather takes tens of microseconds per batch: a parallel map's thread hand-offs cost more than they
    # save (measured: 6-12% more batches/s without), while augmentation is worth spreading over the cores.
    parallel = tf.data.AUTOTUNE if aug is not None else None
    # `deterministic` only means something to a parallel map (TF warns otherwise); the Options below cover the rest.
    ds = order.map(to_model_inputs, num_parallel_calls=parallel,
                   deterministic=(deterministic or None) if parallel is not None else None)
    options = tf.data.Options()
    # In-memory arrays: shard by data, not by files (there are none), so no example is seen twice per epoch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    if deterministic:
        options.deterministic = True
    return ds.with_options(options).prefetch(prefetch)


def repeat_for_fit(dataset: tf.data.Dataset, examples: int, batch_size: int) -> tuple[tf.data.Dataset, int]:
    """(the dataset repeated, batches per epoch): what `fit(..., steps_per_epoch=...)` should get.

    Keras keeps one iterator for the whole fit when it knows the steps per epoch, instead of building a new one
    each epoch (under MirroredStrategy that rebuilds a multi-device iterator and retraces its functions: about
    0.1 s per epoch, seen in a profiler trace). Each pass of the repeated dataset is one epoch, reshuffled,
    partial last batch included: the same batches per epoch as a fresh iterator. An endless dataset
    (`make_dataset(from_epoch=...)`, what jobs/train.py builds) never reaches the repeat.
    """
    return dataset.repeat(), -(-examples // batch_size)


def steps_per_call(requested: int, steps_per_epoch: int) -> int:
    """The largest divisor of `steps_per_epoch` that is at most `requested`: Keras runs steps_per_execution
    batches per call even across an epoch's end of a repeated dataset, so a divisor keeps every epoch one pass."""
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)
