"""Input pipeline and epoch time: jobctl's `tf.data` pipeline against the seeds' own way, same model, batch and
augmentation.

    .venv/bin/python -m bench.bench_pipeline [--quick] [--repetitions 9] [--images 2048] [--out bench/out/pipeline.json]

The seeds' way is numpy arrays into `model.fit` (seeds 001-004) and tf-keras `ImageDataGenerator.flow` for the
augmentation recipe (seed 000). Each recipe's model, batch size and augmentation come from its example spec.
CIFAR-10 and the dogs images are not on this machine, so those recipes run on random uint8 images of the same shape
(32x32x3, as many as `--images`): throughput does not depend on pixel values. digits-cnn runs on the real digits.

Figures (each a paired ratio per repetition, baseline and candidate interleaved):
  pipeline: `PIPELINE_EPOCHS` epochs of batches produced, nothing trained, each side consumed the way `fit` consumes
            it (seed seconds / jobctl seconds: higher is better). `fit` pulls tf.data batches inside its graph, so
            tf.data pipelines are drained in the graph (`Dataset.reduce`), not by a Python loop whose own cost per
            batch would dominate both sides; Keras 3 builds a new iterator over numpy arrays every epoch
            (keras/src/trainers/epoch_iterator.py: no steps_per_epoch), jobctl one per `fit` (`repeat_for_fit`);
            ImageDataGenerator is Python, called once per batch as `fit` calls it.
  epoch:    the second epoch of a `fit(epochs=2)` call (tracing and one-off array conversion excluded on both sides).
For the augmentation recipe a third variant, `composed_affine_dataset`, measures a candidate for jobs/pipeline.py.
Default studies (jobctl pipeline, the cifar10-cnn recipe): XLA on/off, batch size 32/64/128, prefetch depth.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import (  # noqa: E402
    OUT_DIR, ROOT, Stat, add_common_args, interleaved, machine_info, paired_ratio, repetitions, write_json,
)
from bench.report import FigureLink, Headline, dig, fmt_stat, md_table  # noqa: E402

# recipe -> (dataset used here, what it stands for)
RECIPES = {
    "cifar10-cnn": "synthetic 32x32x3 (CIFAR-10 shape; seed 004's CNN, no augmentation)",
    "dogs-image-folder": "synthetic 32x32x3 (seed 000's dogs recipe: flip, rotation, zoom)",
    "digits-cnn": "real digits 8x8x1 (1,150 training images; fit overhead dominates)",
}


def load_recipe(name: str):
    from jobs.spec import load_spec

    return load_spec(ROOT / "examples" / f"{name}.yaml")


def recipe_data(spec, images: int, seed: int = 0):
    """(x uint8 NHWC, y int64, num_classes, pixel_max) for the benchmark."""
    import numpy as np

    if spec.data.dataset == "digits":
        from jobs.datasets import load_dataset

        data = load_dataset(spec.data)
        n = min(images, len(data.x_train))
        return data.x_train[:n], data.y_train[:n], data.num_classes, data.pixel_max
    num_classes = 3 if spec.data.dataset == "image_folder" else 10
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, num_classes, size=images).astype("int64")
    return x, y, num_classes, 255.0


def image_data_generator(aug):
    """tf-keras ImageDataGenerator with the same augmentation as the spec (rotation: turns -> degrees)."""
    from tf_keras.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator(
        rotation_range=aug.rotation * 360.0,
        width_shift_range=aug.translation,
        height_shift_range=aug.translation,
        zoom_range=aug.zoom,
        horizontal_flip=aug.flip in ("horizontal", "horizontal_and_vertical"),
        vertical_flip=aug.flip in ("vertical", "horizontal_and_vertical"),
        fill_mode="nearest",
    )


def compiled_model(spec, input_shape, num_classes, pixel_max, *, jit_compile=None, steps_per_execution=1):
    """The recipe's model compiled as in jobs/training/loop.py; `steps_per_execution` 1 is Keras' default (the seeds')."""
    import keras

    from jobs.models import build_model
    from jobs.training.optim import make_optimizer

    model = build_model(spec.model, spec.preprocessing, input_shape, num_classes, pixel_max, name="bench")
    model.compile(
        optimizer=make_optimizer(spec, spec.training.learning_rate, 100),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=spec.training.jit_compile if jit_compile is None else jit_compile,
        steps_per_execution=steps_per_execution,
    )
    return model


def jobctl_steps_per_call(spec, examples: int, batch_size: int) -> int:
    """What jobs/training/loop.py compiles with: the spec's steps_per_execution lowered to a divisor of the epoch."""
    from jobs.pipeline import steps_per_call

    return steps_per_call(spec.training.steps_per_execution, -(-examples // batch_size))


PIPELINE_EPOCHS = 3


@functools.cache
def _graph_drain():
    """A tf.function that pulls every batch of a dataset inside the graph, as `fit`'s train function does. Traced
    once per dataset type (the warm-up call): each later call only makes a new iterator and drains it."""
    import tensorflow as tf

    @tf.function
    def drain(dataset):
        return dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)

    return drain


def _drain(dataset) -> None:
    _graph_drain()(dataset)


def _as_fit_feeds(repeated, steps: int) -> Callable[[], None]:
    """PIPELINE_EPOCHS epochs of jobctl's dataset as jobs/training/loop.py feeds fit (`repeat_for_fit`'s dataset and
    steps): one iterator for them all."""
    epochs = repeated.take(PIPELINE_EPOCHS * steps)
    return lambda: _drain(epochs)


def steady_epoch(fit: Callable[..., Any]) -> Callable[[], float]:
    """A self-timed variant for `interleaved`: `fit(epochs=2, callbacks=[...])`, returning the second epoch's time.

    A user's `fit(x, y, epochs=10)` converts arrays and builds its data adapter once, not every epoch; timing the
    second epoch of each call keeps that one-off cost (and tracing) out of both sides, while the calls can still
    alternate baseline / jobctl.
    """
    import keras

    class _Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    def run() -> float:
        timer = _Timer()
        fit(epochs=2, callbacks=[timer], verbose=0)
        return timer.seconds[-1]

    return run


def _jobctl_dataset(spec, x, y, num_classes, batch_size, prefetch=None, from_epoch=None):
    """jobctl's training pipeline; `prefetch`: a fixed depth to compare with the default (None: AUTOTUNE);
    `from_epoch` 0: every epoch's pass, endlessly, as jobs/training/loop.py gives Keras 3's fit (None: one pass)."""
    import tensorflow as tf

    from jobs.pipeline import make_dataset

    return make_dataset(x, y, num_classes, batch_size, training=True, seed=spec.seed, augmentation=spec.augmentation,
                        shuffle_buffer=spec.training.shuffle_buffer,
                        prefetch=tf.data.AUTOTUNE if prefetch is None else prefetch, from_epoch=from_epoch)


def composed_affine_dataset(spec, x, y, num_classes, batch_size):
    """The bench's own copy of the composed transform that jobs/pipeline.py adopted after it was measured here
    (kept as a control): jobctl's data path (jobs.pipeline's batches of shuffled indices, gathered) with the
    bench's copy of the flip / rotation / zoom / translation transform (the same random ranges, composed into one
    matrix, so one interpolation pass instead of one per Keras layer). Only the transform is copied."""
    import math

    import tensorflow as tf

    aug = spec.augmentation

    def transform(images):
        b = tf.shape(images)[0]
        h, w = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
        turn = aug.rotation * 2 * math.pi
        angle = tf.random.uniform([b], -turn, turn)
        zoom = tf.random.uniform([b], 1 - aug.zoom, 1 + aug.zoom)
        tx = tf.random.uniform([b], -aug.translation, aug.translation) * w
        ty = tf.random.uniform([b], -aug.translation, aug.translation) * h
        flip_x = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0) if "horizontal" in aug.flip else tf.ones([b])
        flip_y = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0) if "vertical" in aug.flip else tf.ones([b])
        cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
        cx, cy = (w - 1) / 2, (h - 1) / 2
        a0, a1, b0, b1 = cos * flip_x, -sin * flip_y, sin * flip_x, cos * flip_y
        zeros = tf.zeros([b])
        matrix = tf.stack([a0, a1, cx - a0 * cx - a1 * cy + tx, b0, b1, cy - b0 * cx - b1 * cy + ty, zeros, zeros], 1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=matrix, output_shape=tf.shape(images)[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode="NEAREST")

    from jobs.pipeline import _batched_order

    images, labels = tf.constant(x), tf.constant(y.astype("int64"))

    def to_model_inputs(indices):
        return (transform(tf.cast(tf.gather(images, indices), tf.float32)),
                tf.one_hot(tf.gather(labels, indices), num_classes))

    order = _batched_order(len(x), batch_size, training=True, seed=spec.seed,
                           shuffle_buffer=spec.training.shuffle_buffer, drop_remainder=False)
    return order.map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def bench_recipe(name: str, images: int, reps: int, warmup: int = 1) -> dict[str, Any]:
    import keras

    spec = load_recipe(name)
    batch = spec.training.batch_size
    x, y, num_classes, pixel_max = recipe_data(spec, images)
    augmented = spec.augmentation.enabled
    x_float = x.astype("float32")  # the seeds convert the whole array up front (x_train / 255.0)
    y_onehot = keras.utils.to_categorical(y, num_classes)

    ds = _jobctl_dataset(spec, x, y, num_classes, batch, from_epoch=0)
    if augmented:
        flow = image_data_generator(spec.augmentation).flow(x_float, y_onehot, batch_size=batch, shuffle=True, seed=spec.seed)
        steps = len(flow)

        def seed_pipeline():
            for _ in range(PIPELINE_EPOCHS * steps):
                next(flow)

        def seed_batches():
            while True:
                yield next(flow)

        baseline = "tf-keras ImageDataGenerator.flow"
    else:
        from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

        # What Keras 3 `fit(x, y, shuffle=True)` iterates on the TensorFlow backend, built once as `fit` does.
        seed_ds = ArrayDataAdapter(x_float, y_onehot, batch_size=batch, shuffle=True).get_tf_dataset()

        def seed_pipeline():
            for _ in range(PIPELINE_EPOCHS):  # a new iterator each epoch, as Keras' EpochIterator makes
                _drain(seed_ds)

        baseline = "numpy arrays into fit"

    # jobctl's side is fed as jobs.training.loop feeds fit: a repeated dataset and the steps per epoch (one iterator).
    from jobs.pipeline import repeat_for_fit

    ds_fit, steps_per_epoch = repeat_for_fit(ds, len(x), batch)
    pipe_variants = {"seed": seed_pipeline, "jobctl": _as_fit_feeds(ds_fit, steps_per_epoch)}
    if augmented:
        candidate_fit, _ = repeat_for_fit(composed_affine_dataset(spec, x, y, num_classes, batch), len(x), batch)
        pipe_variants["candidate"] = _as_fit_feeds(candidate_fit, steps_per_epoch)
    pipeline = interleaved(pipe_variants, reps, warmup=warmup)

    input_shape = tuple(x.shape[1:])
    per_call = jobctl_steps_per_call(spec, len(x), batch)
    model_seed = compiled_model(spec, input_shape, num_classes, pixel_max)  # Keras' default: one step per call
    model_jobctl = compiled_model(spec, input_shape, num_classes, pixel_max, steps_per_execution=per_call)
    if augmented:
        seed_fit = lambda **kw: model_seed.fit(seed_batches(), steps_per_epoch=steps, **kw)  # noqa: E731
    else:
        seed_fit = lambda **kw: model_seed.fit(x_float, y_onehot, batch_size=batch, shuffle=True, **kw)  # noqa: E731
    jobctl_fit = lambda **kw: model_jobctl.fit(ds_fit, steps_per_epoch=steps_per_epoch, **kw)  # noqa: E731
    epoch_variants = {"seed": steady_epoch(seed_fit), "jobctl": steady_epoch(jobctl_fit)}
    if augmented:
        model_candidate = compiled_model(spec, input_shape, num_classes, pixel_max, steps_per_execution=per_call)
        epoch_variants["candidate"] = steady_epoch(
            lambda **kw: model_candidate.fit(candidate_fit, steps_per_epoch=steps_per_epoch, **kw))
    # No warm-up: each call's first epoch is the untimed one.
    epoch = interleaved(epoch_variants, reps, warmup=0, measure=lambda fn: fn())
    n = len(x)
    candidate = None
    if augmented:
        candidate = {
            "what": "one composed projective transform instead of Keras' RandomFlip/RandomRotation/RandomZoom "
                    "layers (bench_pipeline.composed_affine_dataset: the bench's copy of what jobs/pipeline.py does, a control)",
            "pipeline_speedup": paired_ratio(pipeline["seed"], pipeline["candidate"]),
            "epoch_speedup": paired_ratio(epoch["seed"], epoch["candidate"]),
            "pipeline_speedup_vs_jobctl": paired_ratio(pipeline["jobctl"], pipeline["candidate"]),
        }
    return {
        "candidate": candidate,
        "recipe": name,
        "data": RECIPES[name],
        "images": n,
        "batch_size": batch,
        "jobctl_steps_per_execution": per_call,
        "augmentation": spec.augmentation.model_dump() if augmented else None,
        "baseline": baseline,
        "pipeline_seconds": {k: Stat.of(v) for k, v in pipeline.items()},
        "pipeline_speedup": paired_ratio(pipeline["seed"], pipeline["jobctl"]),
        "pipeline_epochs": PIPELINE_EPOCHS,
        "pipeline_images_per_second": {k: Stat.of([PIPELINE_EPOCHS * n / s for s in v]) for k, v in pipeline.items()},
        "epoch_seconds": {k: Stat.of(v) for k, v in epoch.items()},
        "epoch_speedup": paired_ratio(epoch["seed"], epoch["jobctl"]),
        "epoch_images_per_second": {k: Stat.of([n / s for s in v]) for k, v in epoch.items()},
        "repetitions": reps,
    }


def bench_defaults(images: int, reps: int, warmup: int = 1, quick: bool = False) -> dict[str, Any]:
    """Evidence for the defaults: XLA, batch size and prefetch depth on the seed-004 CNN (jobctl pipeline).

    `quick` keeps two variants of the batch and prefetch studies and skips XLA (smoke mode: code paths only)."""
    spec = load_recipe("cifar10-cnn")
    x, y, num_classes, pixel_max = recipe_data(spec, images)
    shape = tuple(x.shape[1:])
    n = len(x)
    out: dict[str, Any] = {"recipe": "cifar10-cnn", "images": n, "repetitions": reps}

    # XLA: same data, same batch; compile time is excluded by the warm-up epoch. Not in quick mode: the XLA
    # compile alone takes longer than the whole smoke run may.
    if not quick:
        ds = _jobctl_dataset(spec, x, y, num_classes, 32)
        models = {"xla_off": compiled_model(spec, shape, num_classes, pixel_max, jit_compile=False),
                  "xla_on": compiled_model(spec, shape, num_classes, pixel_max, jit_compile=True)}
        times = interleaved({k: (lambda m=m: m.fit(ds, epochs=1, verbose=0)) for k, m in models.items()}, reps,
                            warmup=warmup)
        out["xla"] = {
            "epoch_seconds": {k: Stat.of(v) for k, v in times.items()},
            "speedup_of_xla": paired_ratio(times["xla_off"], times["xla_on"]),
            "default": "xla_off",
        }

    # Batch size and prefetch depth in one interleaved set: both compare against the same default (batch 32,
    # prefetch AUTOTUNE), so it is measured once per repetition. Batch size: throughput only; accuracy also changes
    # with it, which the accuracy benchmark covers.
    # (label, batch, prefetch depth, steps per call; None: the default)
    configs = [("default", 32, None, None), ("batch_64", 64, None, None), ("batch_128", 128, None, None),
               ("prefetch_1", 32, 1, None), ("prefetch_2", 32, 2, None), ("prefetch_8", 32, 8, None),
               ("steps_per_call_1", 32, None, 1)]
    if quick:
        configs = [c for c in configs if c[0] in ("default", "batch_64", "prefetch_1", "steps_per_call_1")]
    # Fed as jobs/training/loop.py feeds fit (a repeated dataset, steps per epoch) and timed on the second epoch of each
    # call, as the recipe comparison is: a one-epoch fit of a finite dataset adds set-up that hides per-step costs.
    from jobs.pipeline import repeat_for_fit

    variants: dict[str, Callable[[], float]] = {}
    for label, b, depth, per_call in configs:
        m = compiled_model(spec, shape, num_classes, pixel_max,
                           steps_per_execution=per_call or jobctl_steps_per_call(spec, n, b))
        d, steps = repeat_for_fit(_jobctl_dataset(spec, x, y, num_classes, b, prefetch=depth, from_epoch=0), n, b)
        variants[label] = steady_epoch(lambda m=m, d=d, steps=steps, **kw: m.fit(d, steps_per_epoch=steps, **kw))
    times = interleaved(variants, reps, warmup=0, measure=lambda fn: fn())
    default_per_call = jobctl_steps_per_call(spec, n, 32)
    out["steps_per_execution"] = {  # oriented like the other studies: default time / variant time
        "epoch_seconds": {f"{default_per_call}_per_call": Stat.of(times["default"]), "1_per_call": Stat.of(times["steps_per_call_1"])},
        "speedup_vs_default": {"1": paired_ratio(times["default"], times["steps_per_call_1"])},
        "default": default_per_call,
    }
    batch = {"batch_32": times["default"], **{k: v for k, v in times.items() if k.startswith("batch_")}}
    out["batch_size"] = {
        "epoch_images_per_second": {k: Stat.of([n / s for s in v]) for k, v in batch.items()},
        "speedup_vs_32": {k: paired_ratio(batch["batch_32"], v) for k, v in batch.items() if k != "batch_32"},
        "default": "batch_32",
    }
    prefetch = {"autotune": times["default"], **{k: v for k, v in times.items() if k.startswith("prefetch_")}}
    out["prefetch"] = {
        "epoch_seconds": {k: Stat.of(v) for k, v in prefetch.items()},
        "speedup_vs_autotune": {k: paired_ratio(prefetch["autotune"], v) for k, v in prefetch.items() if k != "autotune"},
        "default": "autotune",
    }
    return out


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pipeline", description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--images", type=int, default=None, help="images per epoch (default 2048; quick 64)")
    parser.add_argument("--recipes", nargs="*", default=None, help=f"subset of {list(RECIPES)}")
    parser.add_argument("--no-defaults", action="store_true", help="skip the XLA / batch / prefetch studies")
    args = parser.parse_args(argv)
    # Short epochs, many pairs: a burst of other processes' load then tends to cover both sides of a pair (run back
    # to back) instead of one, and the median of 9 pairs shrugs off the bursts that do not.
    reps = repetitions(args, default=9)
    images = args.images or (64 if args.quick else 2048)
    warmup = 0 if args.quick else 1  # quick: the first (timed) call also traces; only the code paths matter
    names = args.recipes or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {unknown}; expected some of {list(RECIPES)}")

    import keras

    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "pipeline", "quick": args.quick, "machine": machine_info(), "recipes": []}
    for name in names:
        print(f"pipeline: {name} ({images} images, {reps} repetitions)", file=sys.stderr, flush=True)
        result["recipes"].append(bench_recipe(name, images, reps, warmup))
    if not args.no_defaults:
        print("pipeline: default studies (XLA, batch size, prefetch)", file=sys.stderr, flush=True)
        result["defaults"] = bench_defaults(images, max(1, min(reps, 5)), warmup, args.quick)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out or OUT_DIR / "pipeline.json", result)
    return result


# ================================================================================ report (bench.run_all)
def headlines(data: dict) -> list[Headline]:
    """The pipeline and epoch speed-ups against the seeds' way, per recipe."""
    rows: list[Headline] = []
    for r in data.get("recipes", []):
        ps, es = r["pipeline_speedup"], r["epoch_speedup"]
        rows.append(Headline(f"Input pipeline speed-up, {r['recipe']} vs {r['baseline']}", fmt_stat(ps, unit="x"),
                     "≥ 3x", ps["median"] >= 3.0))
        rows.append(Headline(f"Whole-epoch speed-up, {r['recipe']} vs {r['baseline']}", fmt_stat(es, unit="x"),
                     "≥ 1.2x", es["median"] >= 1.2))
        c = r.get("candidate")
        if c:
            rows.append(Headline(f"Control: the bench's own copy of the composed transform (jobs/pipeline.py ships it), "
                         f"{r['recipe']} vs the same baseline: pipeline / epoch",
                         f"{fmt_stat(c['pipeline_speedup'], unit='x')} / {fmt_stat(c['epoch_speedup'], unit='x')}",
                         "control", None))
    return rows


def report_section(data: dict, fig: FigureLink) -> str:
    out = [
        "Same model, batch size and augmentation on both sides; the baseline is what the seed notebooks do: numpy "
        "arrays into `model.fit` (Keras 3 turns them into its own `tf.data` pipeline), and tf-keras "
        "`ImageDataGenerator.flow` for the augmentation recipe. *Pipeline* = producing three epochs of batches, nothing "
        "trained, each side consumed as `fit` consumes it: `tf.data` drained inside the graph, a new iterator per "
        "epoch for Keras' numpy adapter (Keras 3 makes one each epoch), one per `fit` for jobctl "
        "(`repeat_for_fit`), ImageDataGenerator called from Python once per batch; *epoch* = the second epoch of a `fit(epochs=2)` call (tracing and the numpy adapter's one-off "
        "conversion excluded on both sides). Speed-up = baseline seconds / jobctl seconds, paired repetition by "
        "repetition.",
        "",
    ]
    rows = []
    for r in data.get("recipes", []):
        rows.append([
            f"`{r['recipe']}`", r["data"], r["batch_size"], r["baseline"],
            fmt_stat(r["pipeline_images_per_second"]["seed"], 0), fmt_stat(r["pipeline_images_per_second"]["jobctl"], 0),
            "**" + fmt_stat(r["pipeline_speedup"], unit="x") + "**",
            fmt_stat(r["epoch_images_per_second"]["seed"], 0), fmt_stat(r["epoch_images_per_second"]["jobctl"], 0),
            "**" + fmt_stat(r["epoch_speedup"], unit="x") + "**",
        ])
    out.append(md_table(["recipe", "images", "batch", "baseline", "pipeline img/s, baseline", "pipeline img/s, jobctl",
                          "pipeline speed-up", "epoch img/s, baseline", "epoch img/s, jobctl", "epoch speed-up"], rows))
    plain = [r for r in data.get("recipes", []) if not r.get("augmentation")]
    if plain:
        r = plain[0]
        pipe = r["pipeline_images_per_second"]["jobctl"]["median"]
        ep = r["epoch_images_per_second"]["jobctl"]["median"]
        out += ["", f"**Reading these figures.** Without augmentation, Keras 3 already feeds numpy arrays through its "
                f"own `tf.data` pipeline, with no Python per batch; on `{r['recipe']}` both pipelines produce batches "
                f"about {pipe / max(ep, 1e-9):.0f}x faster than the model consumes them ({pipe:,.0f} vs {ep:,.0f} "
                "img/s), so neither the pipeline ratio nor a faster pipeline can move the epoch much there. The "
                "seeds' slow path is `ImageDataGenerator` (Python and SciPy per image), which is where augmentation "
                "recipes spend their time."]
    for r in data.get("recipes", []):
        c = r.get("candidate")
        if c:
            out += ["", f"**Where the augmentation time goes.** Three Keras preprocessing layers (flip, rotation, "
                    "zoom) each resample every image; one composed projective transform resamples once. This was first "
                    "measured here as a candidate and is now what jobs/pipeline.py does; the bench keeps its own copy "
                    f"(`composed_affine_dataset`) as a control. On `{r['recipe']}` the control ran its input pipeline "
                    f"at {fmt_stat(c['pipeline_speedup'], unit='x')} the speed of {r['baseline']} "
                    f"({fmt_stat(c['pipeline_speedup_vs_jobctl'], unit='x')} jobctl's pipeline: the two are the same "
                    f"transform), whole epoch {fmt_stat(c['epoch_speedup'], unit='x')}."]
    out += ["", fig("pipeline.png"), ""]
    d = data.get("defaults")
    if d:
        out += ["### What the numbers say about the defaults", "",
                f"On the `{d['recipe']}` recipe, jobctl pipeline, {d['images']} images, {d['repetitions']} repetitions "
                "(ratios > 1: the variant is faster than the default).", ""]
        rows = []
        x = d.get("xla")
        if x:
            rows.append(["XLA (`training.jit_compile`)", "off", "on", fmt_stat(x["speedup_of_xla"], unit="x"),
                         "keep off" if x["speedup_of_xla"]["median"] < 1.0 else "consider on"])
        bs = d.get("batch_size")
        if bs:
            for k, v in bs["speedup_vs_32"].items():
                rows.append(["batch size (`training.batch_size`)", "32", k.split("_")[1], fmt_stat(v, unit="x"),
                             "keep 32 (accuracy changes too; see below)"])
        pf = d.get("prefetch")
        if pf:
            for k, v in pf["speedup_vs_autotune"].items():
                rows.append(["prefetch depth (`jobs/pipeline.py`)", "AUTOTUNE", k.split("_")[1], fmt_stat(v, unit="x"),
                             "consider a fixed depth" if v["min"] > 1.05 else "keep AUTOTUNE (within noise)"
                             if v["median"] >= 1.0 else "keep AUTOTUNE"])
        for k, v in (dig(d, "steps_per_execution", "speedup_vs_default") or {}).items():
            rows.append(["steps per call (`training.steps_per_execution`)", str(d["steps_per_execution"]["default"]),
                         f"{k} (Keras' default)", fmt_stat(v, unit="x"),
                         "consider 1" if v["median"] > 1.0 else f"keep {d['steps_per_execution']['default']}"])
        out.append(md_table(["setting", "default", "variant", "epoch speed vs default", "verdict"], rows))
        out += ["", fig("defaults.png"), ""]
    return "\n".join(out)



def figures(data: dict, canvas) -> None:
    pipe = data
    if pipe.get("recipes"):
        fig, axes = canvas.plt.subplots(1, 2, figsize=(10, 4))
        labels = [r["recipe"] + "\nvs " + ("IDG" if "ImageData" in r["baseline"] else "numpy") for r in pipe["recipes"]]
        pstats = [r["pipeline_speedup"] for r in pipe["recipes"]]
        estats = [r["epoch_speedup"] for r in pipe["recipes"]]
        for r in pipe["recipes"]:
            if r.get("candidate"):
                labels.append(r["recipe"] + "\ncandidate vs IDG")
                pstats.append(r["candidate"]["pipeline_speedup"])
                estats.append(r["candidate"]["epoch_speedup"])
        canvas.bars(axes[0], labels, pstats, "tab:blue", 3.0, "target 3x")
        axes[0].set_title("Input pipeline alone: speed-up over the seeds' way")
        axes[0].set_ylabel("baseline time / jobctl time")
        canvas.bars(axes[1], labels, estats, "tab:green", 1.2, "target 1.2x")
        axes[1].set_title("Whole training epoch: speed-up")
        canvas.save(fig, "pipeline.png")
    d = dig(pipe, "defaults")
    if d:
        labels, stats = [], []
        if d.get("xla"):
            labels.append("XLA on\nvs off")
            stats.append(d["xla"]["speedup_of_xla"])
        for k, v in (dig(d, "batch_size", "speedup_vs_32") or {}).items():
            labels.append(f"batch {k.split('_')[1]}\nvs 32")
            stats.append(v)
        for k, v in (dig(d, "prefetch", "speedup_vs_autotune") or {}).items():
            labels.append(f"prefetch {k.split('_')[1]}\nvs AUTOTUNE")
            stats.append(v)
        for k, v in (dig(d, "steps_per_execution", "speedup_vs_default") or {}).items():
            labels.append(f"{k} step per call\nvs {d['steps_per_execution']['default']}")
            stats.append(v)
        if stats:
            fig, ax = canvas.plt.subplots(figsize=(9, 4))
            canvas.bars(ax, labels, stats, "tab:purple")
            ax.set_title(f"Defaults: epoch speed of each variant relative to the default ({d['recipe']})")
            ax.set_ylabel("default time / variant time")
            canvas.save(fig, "defaults.png")


def advice(results: dict) -> list[str]:
    """What the figures say about the defaults; the lead decides (spec defaults live in jobs/spec/)."""
    pipe = dig(results, "benchmarks", "pipeline", "data") or {}
    d = pipe.get("defaults")
    out = []
    for r in pipe.get("recipes", []):
        c = r.get("candidate")
        if c and c["pipeline_speedup_vs_jobctl"]["median"] > 1.2:
            out.append(f"augmentation in `jobs/pipeline.py`: one composed projective transform made the "
                       f"`{r['recipe']}` input pipeline {c['pipeline_speedup_vs_jobctl']['median']:.1f}x faster than the "
                       "Keras preprocessing layers it uses now (not a default; a change proposed to its owner).")
    if not d:
        return out
    x = dig(d, "xla", "speedup_of_xla", "median")
    if x is not None:
        out.append(f"`training.jit_compile` (XLA): on is {x:.2f}x the speed of off on this CPU — "
                   + ("the default (off) is right." if x < 1.0 else "measure on your hardware before turning it on."))
    runs = {r.get("recipe"): r for r in (dig(results, "benchmarks", "accuracy", "data", "digits") or [])}
    b32, b64 = runs.get("digits-cnn"), runs.get("digits-cnn+batch64")
    evidence = ""
    if b32 and b64 and "test_accuracy" in b32 and "test_accuracy" in b64:
        evidence = (f" On digits, `digits-cnn` at batch 64 scored {b64['test_accuracy']:.4f} against "
                    f"{b32['test_accuracy']:.4f} at 32 ({b64['test_correct'] - b32['test_correct']:+d} of "
                    f"{b32['num_test']} test images) in {b64['wall_seconds']:.0f} s instead of {b32['wall_seconds']:.0f} s.")
    for k, v in (dig(d, "batch_size", "speedup_vs_32") or {}).items():
        out.append(f"`training.batch_size` {k.split('_')[1]}: {v['median']:.2f}x the training images/s of 32.")
    if dig(d, "batch_size"):
        best = max((v["median"] for v in d["batch_size"]["speedup_vs_32"].values()), default=1.0)
        why = ("the speed-up is a reason to set `training.batch_size` per recipe, not to change what existing specs "
               "mean." if best >= 1.2 else "and this run shows no consistent speed-up from a larger batch.")
        out.append("The batch-size default stays 32, the seeds' batch (every example spec that depends on it was "
                   "tuned at 32): a larger batch changes accuracy at a fixed epoch count, " + why + evidence)
    one = dig(d, "steps_per_execution", "speedup_vs_default", "1", "median")
    if one:
        out.append(f"`training.steps_per_execution`: {d['steps_per_execution']['default']} batches per call made an "
                   f"epoch {1 / one:.2f}x as fast as Keras' one — "
                   + ("the default is right." if one <= 1.0 else "this run says 1 would be faster."))
    pf = dig(d, "prefetch", "speedup_vs_autotune") or {}
    if pf:
        best = max(pf.items(), key=lambda kv: kv[1]["median"])
        b = best[1]
        out.append(f"prefetch depth: the best fixed depth ({best[0].split('_')[1]}) is {b['median']:.2f}x AUTOTUNE "
                   f"(pairs {b['min']:.2f}–{b['max']:.2f}) — " + ("worth a fixed default (faster in every pair)."
                   if b["min"] > 1.05 else "AUTOTUNE stays: no fixed depth was faster in every pair."))
    return out


if __name__ == "__main__":
    main()
