"""Data at scale (issue 14): peak memory of training input against dataset size, streaming and in-memory side by
side; input throughput per CPU core at 32x32 and 224x224, jobctl (packed shards, and an image folder streamed)
against Keras' image_dataset_from_directory and tf-keras ImageDataGenerator.flow_from_directory with the same
augmentation; the time a pack takes; and how many such cores would feed one H200.

    .venv/bin/python -m bench.bench_data [--quick] [--out bench/out/data.json]

Images: crops of scikit-learn's two bundled photos re-encoded as JPEG (quality 90) at Stanford Dogs' size, 500x375,
two classes. Every measurement runs in a fresh child process (peak RSS by GNU time); the throughput child is pinned
to one core (sched_setaffinity before TensorFlow starts: tf.data sizes its threads from it), so its images/s are
per core, and runs its variants interleaved repetition by repetition.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import OUT_DIR, ROOT, Stat, bench_env, interleaved, machine_info, run_process, write_and_show
from bench.report import FigureLink, Headline, fmt, fmt_stat, md_table

PHOTO_SIZE = (500, 375)  # width, height: Stanford Dogs' typical image
BATCH = 32
# One H200, images/s at per-replica batch 256, 8 steps per call (../shared/ANCHORS.md, "A GPU's appetite").
H200 = {"digits-cnn": 193_530, "fashion-mnist-mlp": 213_386, "cifar10-cnn": 134_185, "cifar10-cnn-dropout": 133_134,
        "cifar10-batchnorm-cnn": 128_984, "cifar10-separable-cnn": 97_992}
RESNET50_H200 = 4_790  # ResNet-50 at 224x224, batch 256, bfloat16 (same source)
SHAPES = {"digits-cnn": (8, 8, 1), "fashion-mnist-mlp": (28, 28, 1)}  # the others: CIFAR's 32x32x3
TARGET_PER_CORE_224 = 1500
TARGET_VS_KERAS = 2.5
TARGET_MEMORY_GROWTH = 0.10


def write_photos(root: Path, count: int, seed: int = 0) -> Path:
    """root/<class>/<i>.jpg: `count` crops, half of each photo, resized to 500x375."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for i in range(count):
        c = i % 2
        d = root / ("china", "flower")[c]
        d.mkdir(parents=True, exist_ok=True)
        p = photos[c]
        h, w = int(rng.integers(240, p.shape[0])), int(rng.integers(320, p.shape[1]))
        y, x = int(rng.integers(0, p.shape[0] - h + 1)), int(rng.integers(0, p.shape[1] - w + 1))
        Image.fromarray(p[y:y + h, x:x + w]).resize(PHOTO_SIZE).save(d / f"{i:05d}.jpg", quality=90)
    return root


# ---------------------------------------------------------------------------------------------------- children
def child_memory(folder: str, mode: str, size: int, buffer: int) -> dict:
    """One epoch of the training input, as `fit` takes it, nothing trained; peak RSS is measured from outside."""
    from jobs.inputs import load_inputs
    from jobs.spec import DataSpec

    spec = DataSpec(dataset="image_folder", path=folder, resize=(size, size), stream_shuffle_buffer=buffer,
                    in_memory_max_bytes=0 if mode == "streaming" else 10**13, validation={"fraction": 0.1})
    inputs = load_inputs(spec)
    seen = 0
    for images, _ in inputs.train_dataset(BATCH, seed=0, augmentation=None, shuffle_buffer=None,
                                          deterministic=False, from_epoch=None):
        seen += int(images.shape[0])
    return {"mode": inputs.mode, "images": seen}


CROP_FROM = 256  # at 224x224: the ResNet recipe, a random 224 window of the image at 256 (ANCHORS' figure)


def _augmentation(size: int):
    """At 224: flip + crop (augmentation.crop_from), the issue's and ANCHORS' pipeline; Keras gets RandomCrop +
    RandomFlip at 256. At 32: flip + a crop-like shift. flow_from_directory has no crop: it gets the shift."""
    from jobs.spec import AugmentationSpec

    if size >= 224:
        return AugmentationSpec(flip="horizontal", crop_from=(CROP_FROM, CROP_FROM))
    return AugmentationSpec(flip="horizontal", translation=0.1)


def _rate(make_iterator, images: int) -> float:
    """images/s of drawing at least `images` from a fresh iterator (its start-up counted: a pass in training pays it
    too); nothing is produced ahead while the other variants run."""
    started = time.perf_counter()
    it, seen = make_iterator(), 0
    while seen < images:
        batch = next(it)
        seen += int(batch[0].shape[0])
    return seen / (time.perf_counter() - started)


def _throughput_variants(folder: Path, packed: Path, size: int, images: int, ffd_images: int) -> dict:
    """name -> one repetition (returns its images/s): the tf.data sources endless, `images` drawn from a fresh
    iterator; flow_from_directory (a Python iterator: nothing computed ahead) `ffd_images`, it is that much slower."""
    import keras
    import tensorflow as tf

    from jobs.inputs import load_inputs
    from jobs.spec import DataSpec

    from jobs.spec import AugmentationSpec

    aug = _augmentation(size)
    crop = aug.crop_from is not None

    def jobctl(spec, augmentation=aug, deterministic=False):
        ds = load_inputs(spec).train_dataset(BATCH, seed=0, augmentation=augmentation, shuffle_buffer=None,
                                             deterministic=deterministic, from_epoch=0)
        return lambda: _rate(lambda: iter(ds), images)

    if crop:
        layers = keras.Sequential([keras.layers.RandomCrop(size, size, seed=0),
                                   keras.layers.RandomFlip("horizontal", seed=0)])
    else:
        layers = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=0),
                                   keras.layers.RandomTranslation(0.1, 0.1, seed=0)])
    kds = keras.utils.image_dataset_from_directory(str(folder), image_size=(CROP_FROM, CROP_FROM) if crop else (size, size),
                                                   batch_size=BATCH, seed=0, verbose=False)
    kds = kds.map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    kds = kds.repeat().prefetch(tf.data.AUTOTUNE)
    from tf_keras.preprocessing.image import ImageDataGenerator

    gen = ImageDataGenerator(horizontal_flip=True, width_shift_range=0.1, height_shift_range=0.1).flow_from_directory(
        str(folder), target_size=(size, size), batch_size=BATCH, seed=0)
    return {
        "jobctl_packed": jobctl(DataSpec(dataset="tfrecord", path=str(packed), resize=(size, size))),
        # augmentation.placement: device: the host only decodes and resizes; the transform runs in the train step
        "jobctl_packed_device_aug": jobctl(DataSpec(dataset="tfrecord", path=str(packed), resize=(size, size)),
                                           AugmentationSpec(crop_from=aug.crop_from, flip="horizontal", placement="device")
                                           if crop else None),
        **({"jobctl_packed_flip_shift": jobctl(DataSpec(dataset="tfrecord", path=str(packed), resize=(size, size)),
                                               AugmentationSpec(flip="horizontal", translation=0.1)),
            # training.deterministic: what exact replay costs (ordered maps and interleave)
            "jobctl_packed_deterministic": jobctl(DataSpec(dataset="tfrecord", path=str(packed), resize=(size, size)),
                                                  deterministic=True)} if crop else {}),
        "jobctl_folder": jobctl(DataSpec(dataset="image_folder", path=str(folder), resize=(size, size),
                                         in_memory_max_bytes=0, validation={"fraction": 0.1})),
        "keras_image_dataset_from_directory": lambda: _rate(lambda: iter(kds), images),
        "tf_keras_flow_from_directory": lambda: _rate(lambda: gen, ffd_images),
    }


def _recipe_variants(images: int) -> dict:
    """Per recipe shape: jobctl's in-memory pipeline at batch 256 with the dogs recipe's augmentation on the host,
    and without it (augmentation.placement: device leaves the host batching uint8 only); one pass each."""
    import numpy as np

    from bench.bench_pipeline import load_recipe
    from jobs.pipeline import make_dataset

    dogs = load_recipe("dogs-image-folder").augmentation
    out = {}
    rng = np.random.default_rng(0)
    for shape in sorted({SHAPES.get(r, (32, 32, 3)) for r in H200}):
        x = rng.integers(0, 256, size=(images, *shape), dtype=np.uint8)
        y = rng.integers(0, 10, size=images).astype("int64")
        for placement, augmentation in (("host", dogs), ("device", None)):
            ds = make_dataset(x, y, 10, 256, training=True, seed=0, augmentation=augmentation, from_epoch=0)
            out[f"{'x'.join(map(str, shape))}_{placement}"] = (lambda ds=ds: _rate(lambda: iter(ds), images))
    return out


def _rates(variants: dict, reps: int) -> dict:
    return interleaved(variants, reps, measure=lambda fn: fn())


def child_throughput(folder: str, work: str, sizes: list[int], images: list[int], ffd_images: int, recipe_images: int,
                     reps: int) -> dict:
    import tensorflow  # noqa: F401 -- imported before the pack is timed, not inside it

    from jobs.datasets.pack import PackOptions, folder_source, pack
    from jobs.spec import DataSpec

    result: dict[str, Any] = {"cores_used": len(os.sched_getaffinity(0)), "sizes": {}}
    for size, drawn in zip(sizes, images):
        stored = 256 if size >= 224 else size  # a pack stores small images: ANCHORS' 256x256 for a 224 crop
        out = Path(work) / f"packed-{size}"
        started = time.perf_counter()
        manifest = pack(folder_source(DataSpec(dataset="image_folder", path=folder, validation={"fraction": 0.1})),
                        out, PackOptions(encoding="jpeg", resize=(stored, stored), workers=1)).manifest
        pack_seconds = time.perf_counter() - started
        packed_images = sum(split["count"] for split in manifest["splits"].values())
        rates = _rates(_throughput_variants(Path(folder), out, size, drawn, ffd_images), reps)
        result["sizes"][str(size)] = {
            "stored": stored, "pack_seconds": pack_seconds, "packed_images": packed_images,
            "images": drawn, "ffd_images": ffd_images,
            "images_per_second": {k: Stat.of(v).as_dict(1) for k, v in rates.items()},
            # packed / baseline, repetition by repetition (same round of the interleaving)
            "vs": {base: Stat.of([a / b for a, b in zip(rates["jobctl_packed"], rates[base])]).as_dict(2)
                   for base in ("keras_image_dataset_from_directory", "tf_keras_flow_from_directory", "jobctl_folder")},
        }
    rates = _rates(_recipe_variants(recipe_images), max(2, reps - 2))
    result["recipes"] = {k: Stat.of(v).as_dict(0) for k, v in rates.items()}
    return result


# ------------------------------------------------------------------------------------------------------- parent
def _child(args: list[str], *, pin: bool = False, timeout: float = 1200) -> tuple[dict, float]:
    env = bench_env(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    if pin:
        env["JOBCTL_BENCH_PIN"] = "1"
    r = run_process([sys.executable, "-m", "bench.bench_data", "--child", *args], cwd=ROOT, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"bench_data child {args[:2]} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1]), r.peak_rss_mb


def measure(quick: bool) -> dict:
    memory_images, memory_size, buffer = (120, 64, 32) if quick else (800, 224, 256)
    photos = 96 if quick else 600
    # Images a repetition draws: several passes over the training split (so a shuffle buffer's fill at the end of
    # one is a small share), per size; flow_from_directory fewer, it runs at a few percent of the others' speed.
    throughput = dict(images="256,128" if quick else "4096,2048", ffd_images=64 if quick else 256,
                      recipe_images=2048 if quick else 51_200, reps=2 if quick else 5, sizes=[32, 224])
    result: dict[str, Any] = {"machine": machine_info(), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        one = write_photos(tmp / "x1", memory_images)
        four = write_photos(tmp / "x4", 4 * memory_images, seed=1)
        memory: dict[str, Any] = {"images_1x": memory_images, "size": memory_size, "shuffle_buffer": buffer}
        for mode in ("in-memory", "streaming"):  # one run each: a peak, not a rate
            for label, folder in (("1x", one), ("4x", four)):
                _, peak = _child(["memory", str(folder), mode, str(memory_size), str(buffer)])
                memory[f"{mode}_{label}_mb"] = round(peak)
            memory[f"{mode}_growth"] = memory[f"{mode}_4x_mb"] / memory[f"{mode}_1x_mb"] - 1
        result["memory"] = memory
        folder = write_photos(tmp / "photos", photos, seed=2)
        data, _ = _child(["throughput", str(folder), str(tmp), ",".join(map(str, throughput["sizes"])),
                          throughput["images"], str(throughput["ffd_images"]), str(throughput["recipe_images"]),
                          str(throughput["reps"])], pin=True)
        result["throughput"] = data
        result["photos"] = photos
    return result


def cores_table(data: dict) -> list[list[str]]:
    rows = []
    recipes = (data.get("throughput") or {}).get("recipes") or {}
    for recipe, rate in H200.items():
        shape = "x".join(map(str, SHAPES.get(recipe, (32, 32, 3))))
        host, device = recipes.get(f"{shape}_host"), recipes.get(f"{shape}_device")
        if host and device:
            rows.append([f"`{recipe}`", shape, f"{rate:,}", fmt(host["median"], 0), f"{rate / host['median']:.1f}",
                         fmt(device["median"], 0), f"{rate / device['median']:.1f}"])
    packed = ((data.get("throughput") or {}).get("sizes") or {}).get("224", {}).get("images_per_second", {})
    if packed.get("jobctl_packed"):
        device = packed.get("jobctl_packed_device_aug")  # absent from runs before it was measured
        rows.append([f"ResNet-50 (packed JPEG shards, stored 256x256, {_aug_label(packed)})", "224x224x3", f"{RESNET50_H200:,}",
                     fmt(packed["jobctl_packed"]["median"], 0), f"{RESNET50_H200 / packed['jobctl_packed']['median']:.1f}",
                     fmt(device["median"], 0) if device else "—",
                     f"{RESNET50_H200 / device['median']:.1f}" if device else "—"])
    return rows


# ------------------------------------------------------------------------------------------------- report hooks
def _aug_label(images_per_second: dict) -> str:
    """What the 224 figures were measured with: runs from before augmentation.crop_from measured flip + shift."""
    return "flip + random 224 crop" if "jobctl_packed_flip_shift" in images_per_second else "flip + shift"


def headlines(data: dict) -> list[Headline]:
    out = []
    m = data.get("memory") or {}
    if "streaming_growth" in m:
        out.append(Headline(f"Peak memory of one epoch's input, 1x -> 4x images ({m['images_1x']} -> "
                            f"{4 * m['images_1x']}), streaming", f"+{100 * m['streaming_growth']:.0f}% "
                            f"(in memory: +{100 * m['in-memory_growth']:.0f}%)", "≤ +10%",
                            m["streaming_growth"] <= TARGET_MEMORY_GROWTH))
    s224 = ((data.get("throughput") or {}).get("sizes") or {}).get("224")
    if s224:
        packed = s224["images_per_second"]["jobctl_packed"]
        out.append(Headline(f"Input images/s per core at 224x224 from packed shards ({_aug_label(s224['images_per_second'])})",
                            fmt_stat(packed, 0), f"≥ {TARGET_PER_CORE_224:,}", packed["median"] >= TARGET_PER_CORE_224))
        vs = s224["vs"]["keras_image_dataset_from_directory"]
        out.append(Headline("Packed shards vs Keras image_dataset_from_directory at 224x224, per core",
                            fmt_stat(vs, 2, "x"), f"≥ {TARGET_VS_KERAS}x", vs["median"] >= TARGET_VS_KERAS))
    return out


def report_section(data: dict, fig: FigureLink) -> str:
    m = data.get("memory") or {}
    t = data.get("throughput") or {}
    lines = [f"JPEG photos at Stanford Dogs' size (500x375; crops of scikit-learn's two sample photos, quality 90). "
             f"The throughput child ran pinned to {t.get('cores_used', 1)} core; figures are images/s per core, "
             "median (spread, n) of interleaved repetitions; ratios are paired repetition by repetition.", ""]
    if m:
        lines += [f"**Peak memory** (peak RSS of a process that loads the data as training does and drains one "
                  f"epoch of batches, nothing trained; {m['size']}x{m['size']}, stream shuffle buffer "
                  f"{m['shuffle_buffer']} images; one run each):", "",
                  md_table(["path", f"1x ({m['images_1x']} images)", f"4x ({4 * m['images_1x']})", "growth"],
                           [[mode, f"{m[f'{mode}_1x_mb']} MB", f"{m[f'{mode}_4x_mb']} MB",
                             f"+{100 * m[f'{mode}_growth']:.0f}%"] for mode in ("in-memory", "streaming")]), ""]
    for size, s in (t.get("sizes") or {}).items():
        ips = s["images_per_second"]
        crop = "jobctl_packed_flip_shift" in ips  # runs before crop_from existed measured flip + shift at 224 too
        what = (f"flip + a random {size}x{size} window of the image at {CROP_FROM}x{CROP_FROM} (augmentation.crop_from; "
                "Keras: RandomCrop + RandomFlip; flow_from_directory has no crop and gets a 10% shift)") if crop \
            else "flip + 10% shift on every side"
        lines += [f"**Throughput at {size}x{size}** (batches of {BATCH}, {what}; packed "
                  f"shards store {s['stored']}x{s['stored']} JPEGs; a repetition draws {s['images']} images from a "
                  f"fresh iterator, its start-up included, {s['ffd_images']} for flow_from_directory):", "",
                  md_table(["source", "images/s per core", "packed shards are"],
                           [["jobctl, packed shards", fmt_stat(ips["jobctl_packed"], 0), "—"]]
                           + ([["jobctl, packed shards, augmentation.placement: device (the host decodes" + (" and crops)" if crop else " and resizes)"),
                                fmt_stat(ips["jobctl_packed_device_aug"], 0), "—"]]
                              if "jobctl_packed_device_aug" in ips else [])
                           + ([["jobctl, packed shards, flip + 10% shift (one projective resample per image)",
                                fmt_stat(ips["jobctl_packed_flip_shift"], 0), "—"]] if crop else [])
                           + ([["jobctl, packed shards, training.deterministic (exact replay)",
                                fmt_stat(ips["jobctl_packed_deterministic"], 0), "—"]]
                              if "jobctl_packed_deterministic" in ips else [])
                           + [[name, fmt_stat(ips[key], 0), fmt_stat(s["vs"][key], 2, "x")] for name, key in (
                               ("jobctl, image folder streamed", "jobctl_folder"),
                               ("Keras image_dataset_from_directory + " + ("RandomCrop/RandomFlip" if crop else "RandomFlip/RandomTranslation"),
                                "keras_image_dataset_from_directory"),
                               ("tf-keras ImageDataGenerator.flow_from_directory", "tf_keras_flow_from_directory"))]),
                  "", f"The pack took {s['pack_seconds']:.1f} s on one core for {s['packed_images']} images "
                  f"({s['packed_images'] / max(s['pack_seconds'], 1e-9):.0f} images/s); "
                  + _pays_after(s), ""]
    rows = cores_table(data)
    if rows:
        lines += ["**Cores per GPU**: one H200's appetite at per-replica batch 256 (../shared/ANCHORS.md) over what "
                  "one core of this machine delivers with jobctl's in-memory pipeline (synthetic uint8 arrays of "
                  "the recipe's shape, batch 256), with the dogs recipe's augmentation (flip, rotation 0.05, zoom "
                  "0.1) on the host, against `augmentation.placement: device` (the host only batches):", "",
                  md_table(["recipe", "input", "H200 images/s", "per core, host aug", "cores, host",
                            "per core, device aug", "cores, device"], rows), ""]
    return "\n".join(lines)


def _pays_after(s: dict) -> str:
    ips = s["images_per_second"]
    saved = 1 / ips["jobctl_folder"]["median"] - 1 / ips["jobctl_packed"]["median"]  # seconds per image per epoch
    if saved <= 0:
        return "streaming the folder was as fast here, so packing buys nothing at this size."
    epochs = s["pack_seconds"] / (saved * max(s["packed_images"], 1))
    return f"against streaming the folder, it pays for itself after {epochs:.1f} epochs."


# --------------------------------------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_data", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small folders, 2 repetitions (a smoke run, ~2 min)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "data.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "memory":
            out = child_memory(rest[0], rest[1], int(rest[2]), int(rest[3]))
        else:
            out = child_throughput(rest[0], rest[1], [int(s) for s in rest[2].split(",")],
                                   [int(s) for s in rest[3].split(",")], int(rest[4]), int(rest[5]), int(rest[6]))
        print(json.dumps(out))
        return out
    return write_and_show(args.out, measure(args.quick))


if os.environ.get("JOBCTL_BENCH_PIN") and __name__ == "__main__" and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before TensorFlow starts its thread pools

if __name__ == "__main__":
    main()
