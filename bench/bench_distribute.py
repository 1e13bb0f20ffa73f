"""Distribution overhead: images per second of one model and global batch under each strategy, side by side.

    .venv/bin/python -m bench.bench_distribute [--examples 4096] [--batch 64] [--repetitions 5] [--quick] [--out F]

Variants, all training the same CNN (jobs.models, Conv32-Pool-Conv64-Pool-Dense64 on 32x32x3 uint8 images through
jobs.pipeline) with the same global batch, fed as jobs.training.loop feeds fit (one iterator for the whole fit, no prefetch
to device on CPU replicas). One measurement is the median steady-state epoch (epochs 2-3 of a 3-epoch fit, after an
untimed warm-up fit):

- `none`: no strategy (the default strategy, Keras 3 `fit`);
- `mirrored_1`: MirroredStrategy on one logical CPU device;
- `mirrored_2`: MirroredStrategy on two logical CPU devices (the CPU split in two, as `--virtual-devices 2`);
- `workers_2`: two worker processes on 127.0.0.1 with TF_CONFIG (MultiWorkerMirroredStrategy, tf-keras `fit`).

The first three run in one process, interleaved repetition by repetition (paired ratios to `none`); the two
workers run afterwards in the same benchmark run (their ratio is median over median). Every variant shares the
same 2 cores here: logical devices and worker processes add coordination, never compute, so these figures
measure the *cost* of each strategy. Multi-GPU or multi-node *scaling* is not measurable on this machine.
Writes bench/out/distribute.json (--quick: tiny sizes, one repetition, all variants at once: a smoke test of the
harness whose figures mean nothing; bench/out/distribute-quick.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from typing import Optional

from bench.common import ROOT, Stat, add_common_args, bench_env, machine_info, paired_ratio, repetitions, write_and_show
from bench.common import free_ports as _free_ports
from bench.report import Headline, fmt_stat, target_headlines

MODEL = {"type": "cnn", "conv_filters": [32, 64], "dense_units": [64], "padding": "same"}
INPUT = (32, 32, 3)


def _data(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, *INPUT), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    return x, y


def _model_and_data(info, n: int, batch: int):
    """(model, dataset, steps per epoch): the steps are None for tf-keras (multi-worker), which iterates the
    dataset afresh each epoch."""
    from jobs.distribute import distribute_input
    from jobs.pipeline import make_dataset, repeat_for_fit
    from jobs.spec import JobSpec

    spec = JobSpec(name="bench", model=MODEL)
    keras = info.keras
    x, y = _data(n)
    with info.strategy.scope():
        model = info.models.build_model(spec.model, spec.preprocessing, INPUT, 10, 255.0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    # As jobs.train feeds fit: a repeated dataset with steps per epoch (one iterator for the whole fit),
    # distributed without prefetch to device on CPU replicas.
    ds = make_dataset(x, y, 10, batch, training=True, seed=1, from_epoch=None if info.legacy_keras else 0)
    steps = None
    if not info.legacy_keras:
        ds, steps = repeat_for_fit(ds, n, batch)
    return model, distribute_input(info, ds), steps


def _epoch_seconds(model, ds, steps: Optional[int] = None, epochs: int = 1) -> float:
    """Wall time of an epoch between Keras' epoch callbacks: the training steps, not fit's set-up.

    With `steps` (a repeated dataset, as jobs.training.loop runs Keras 3), `fit` runs `epochs` epochs on one iterator and
    the median of all but the first is returned: steady-state epochs, as in a real run past its first epoch.
    """
    keras = __import__(type(model).__module__.split(".")[0])  # keras or tf_keras, whichever built the model
    times: list[float] = []

    class _Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            times.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            times[-1] = time.perf_counter() - times[-1]

    model.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[_Clock()])
    steady = times[1:] or times
    return sorted(steady)[len(steady) // 2]


def child_single(n: int, batch: int, reps: int) -> dict:
    """none / mirrored_1 / mirrored_2 in one process (2 logical CPU devices configured before anything else)."""
    from jobs import distribute

    distribute.configure_virtual_devices(2)
    import keras
    import tensorflow as tf

    from jobs import models

    def info(kind, devices=()):
        strategy = tf.distribute.MirroredStrategy(list(devices)) if devices else tf.distribute.get_strategy()
        return distribute.StrategyInfo(strategy, kind, strategy.num_replicas_in_sync, keras=keras, models=models,
                                       devices=list(devices))

    # Full logical device names, as jobs.distribute.select_strategy passes them.
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    variants = {
        "none": info("default"),
        "mirrored_1": info("mirrored", cpus[:1]),
        "mirrored_2": info("mirrored", cpus[:2]),
    }
    built = {name: _model_and_data(v, n, batch) for name, v in variants.items()}
    for model, ds, steps in built.values():
        _epoch_seconds(model, ds, steps)  # warm-up: tracing and the dataset cache
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        names = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in names:
            model, ds, steps = built[name]
            seconds[name].append(_epoch_seconds(model, ds, steps=steps, epochs=3))
    return {name: [n / s for s in values] for name, values in seconds.items()}


def child_worker(n: int, batch: int, reps: int) -> dict:
    from jobs import distribute

    info = distribute.select_strategy("auto", worker_timeout=120)
    model, ds, steps = _model_and_data(info, n, batch)
    _epoch_seconds(model, ds, steps)
    # Every worker steps through the same global batches (each computes half), so one worker's epoch time is
    # the job's: n images per epoch in total.
    return {"workers_2": [n / _epoch_seconds(model, ds, steps) for _ in range(reps)], "task": info.task_index}


def _run_child(args: list[str], env: dict) -> subprocess.Popen:
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_distribute", *args], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    proc.output = out  # type: ignore[attr-defined]
    return proc


def _result(proc: subprocess.Popen, timeout: float) -> dict:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.output.seek(0)  # type: ignore[attr-defined]
    text = proc.output.read().decode(errors="replace")  # type: ignore[attr-defined]
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"bench child failed (exit {proc.returncode}):\n{text[-3000:]}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4096, help="images per epoch")
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--child", choices=("single", "worker"), help=argparse.SUPPRESS)
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.examples, args.batch = 256, 32
    reps = repetitions(args)
    if args.child:
        fn = child_single if args.child == "single" else child_worker
        print("RESULT " + json.dumps(fn(args.examples, args.batch, reps)), flush=True)
        return {}

    timeout = 900.0
    common = ["--examples", str(args.examples), "--batch", str(args.batch), "--repetitions", str(reps)]
    started = time.perf_counter()

    def start_workers() -> list[subprocess.Popen]:
        cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
        return [
            _run_child(["--child", "worker", *common],
                       bench_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
            for i in range(2)
        ]

    single_proc = _run_child(["--child", "single", *common], bench_env())
    # --quick checks the harness, not the figures: everything at once to keep the smoke test short.
    procs = start_workers() if args.quick else None
    single = _result(single_proc, timeout)
    procs = procs or start_workers()
    workers = [_result(p, timeout) for p in procs]
    chief = next(w for w in workers if w["task"] == 0)

    base = single["none"]
    variants = {}
    for name in ("none", "mirrored_1", "mirrored_2"):
        ratio = paired_ratio(single[name], base)
        variants[name] = {"images_per_second": Stat.of(single[name]).as_dict(1), "ratio_to_none": ratio.as_dict(3)}
    w = Stat.of(chief["workers_2"])
    variants["workers_2"] = {
        "images_per_second": w.as_dict(1),
        "ratio_to_none": {"median": round(w.median / Stat.of(base).median, 3), "note": "median over median, not paired"},
    }
    mirrored_1_cost = 1 - variants["mirrored_1"]["ratio_to_none"]["median"]
    result = {
        "benchmark": "distribution overhead: images/s per strategy, same model and global batch",
        "command": "python -m bench.bench_distribute" + (" --quick" if args.quick else
                                                         f" --examples {args.examples} --batch {args.batch} --repetitions {reps}"),
        "machine": machine_info(),
        "model": MODEL, "input_shape": list(INPUT), "examples_per_epoch": args.examples,
        "global_batch": args.batch, "repetitions": reps,
        "variants": variants,
        "mirrored_1_overhead": round(mirrored_1_cost, 3),
        "mirrored_1_target_met": mirrored_1_cost <= 0.10,
        "seconds": round(time.perf_counter() - started, 1),
        "note": "All variants share this machine's CPU cores: the figures are the cost of each strategy, not scaling. "
                "Multi-GPU and multi-node scaling cannot be measured without GPUs or nodes.",
    }
    out = args.out or ROOT / "bench" / "out" / ("distribute-quick.json" if args.quick else "distribute.json")
    return write_and_show(out, result)


# ================================================================================ report (bench.run_all)
def headlines(data: dict) -> list[Headline]:
    """Each strategy's images/s relative to none; mirrored_1 has a target."""
    rows: list[Headline] = []
    if isinstance(data.get("variants"), dict):
        for variant, v in data["variants"].items():
            if variant == "none":
                continue
            r = v.get("ratio_to_none", {})
            fig = fmt_stat(r, unit="x") if "min" in r else f"{r.get('median', float('nan')):.2f}x ({r.get('note', '')})"
            met = data.get("mirrored_1_target_met") if variant == "mirrored_1" else None
            rows.append(Headline(f"Training images/s under `{variant}` relative to no strategy (same 2 cores)", fig,
                                 "≥ 0.90x" if variant == "mirrored_1" else "—", met))
    return rows + target_headlines("distribute", data)


def figures(data: dict, canvas) -> None:
    variants = data.get("variants")
    if isinstance(variants, dict) and variants:
        names = [k for k in variants if isinstance(variants[k].get("ratio_to_none"), dict)]
        stats = []
        for k in names:
            r = variants[k]["ratio_to_none"]
            stats.append({"median": r["median"], "min": r.get("min", r["median"]), "max": r.get("max", r["median"])})
        fig, ax = canvas.plt.subplots(figsize=(7, 4))
        canvas.bars(ax, names, stats, "tab:cyan", 0.9, "mirrored_1 target 0.90x")
        ax.set_title("Training images/s per strategy relative to none (same 2 cores)")
        ax.set_ylabel("images/s ÷ images/s without a strategy")
        canvas.save(fig, "distribute.png")


if __name__ == "__main__":
    main()
