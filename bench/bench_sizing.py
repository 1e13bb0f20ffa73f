"""Host memory of jobctl's input pipeline per GPU, the measurement behind k8s/sizing.py's memory rule.

    .venv/bin/python -m bench.bench_sizing [--quick] [--out bench/out/sizing.json]

Each case runs in a fresh process: import TensorFlow (RSS measured), hold the data set in memory as the trainer
does (uint8 arrays), then drain jobctl's training pipeline (jobs.pipeline.make_dataset, the dogs recipe's
augmentation: flip, rotation, zoom; AUTOTUNE parallel map and prefetch) at per-replica batch 256, and record the
peak RSS. What the pipeline adds on top of the data itself is what one GPU's feeder costs in host memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # name: (side, images held in memory)
    "32x32": (32, 50_000),      # CIFAR-10's training set
    "224x224": (224, 5_000),    # a 5k-image slice at ResNet's input size
}
BATCH = 256

_CHILD = r"""
import json, resource, sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
side, images, batch, batches = (int(a) for a in sys.argv[1:5])
start = rss_mb()
import numpy as np, tensorflow as tf
tf_rss = rss_mb()
from bench.bench_pipeline import load_recipe
from jobs.pipeline import make_dataset
spec = load_recipe("dogs-image-folder")
rng = np.random.default_rng(0)
x = rng.integers(0, 256, size=(images, side, side, 3), dtype=np.uint8)
y = rng.integers(0, 3, size=images).astype("int64")
data_rss = rss_mb()
ds = make_dataset(x, y, 3, batch, training=True, seed=0, augmentation=spec.augmentation,
                  shuffle_buffer=spec.training.shuffle_buffer, prefetch=tf.data.AUTOTUNE)
peak = data_rss
for i, _ in enumerate(ds.take(batches)):
    peak = max(peak, rss_mb())
peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({"python_mb": round(start), "tensorflow_mb": round(tf_rss - start), "data_mb": round(data_rss - tf_rss),
                  "pipeline_mb": round(peak - data_rss), "peak_rss_mb": round(peak), "batches": batches}))
"""


def measure(side: int, images: int, batches: int) -> dict:
    env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(side), str(images), str(BATCH), str(batches)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "sizing.json")
    args = parser.parse_args(argv)
    batches = 8 if args.quick else 30
    result = {"batch": BATCH, "cases": {name: {"images": n, **measure(side, n, batches)} for name, (side, n) in CASES.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
