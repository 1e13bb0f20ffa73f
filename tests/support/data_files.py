"""Test data in the exact on-disk formats: JPEG folders from scikit-learn's two bundled photos, packed directories
written by the packer, digits arrays; and the helpers that run worker processes with TF_CONFIG on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def photo_folder(root: Path, per_class: int, size=(120, 90), classes=("china", "flower"), seed: int = 0) -> Path:
    """root/<class>/<i>.jpg: crops of load_sample_images' two photos (one class each), re-encoded as JPEG."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        p = photos[c % len(photos)]
        for i in range(per_class):
            h, w = 200, 260
            y, x = int(rng.integers(0, p.shape[0] - h)), int(rng.integers(0, p.shape[1] - w))
            Image.fromarray(p[y:y + h, x:x + w]).resize(size).save(d / f"{i:04d}.jpg", quality=90)
    return root


def digits_folder(root: Path, per_class: int = 20, classes: int = 3, size: int = 16) -> Path:
    """root/<digit>/<i>.png: scikit-learn digits upscaled to `size`, as RGB PNGs (an easy, learnable folder)."""
    from PIL import Image

    from jobs.datasets.digits import digits_arrays

    images, target = digits_arrays()
    for c in range(classes):
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images[target == c][:per_class]):
            arr = np.clip(img * 16, 0, 255).astype(np.uint8)
            Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST).convert("RGB").save(d / f"{i:03d}.png")
    return root


def pack_folder(folder: Path, out: Path, **options) -> dict:
    from jobs.datasets.pack import PackOptions, folder_source, pack
    from jobs.spec import DataSpec

    spec = DataSpec(dataset="image_folder", path=str(folder), split_seed=options.pop("split_seed", 0))
    return pack(folder_source(spec), out, PackOptions(**options)).manifest


def pack_arrays(x: np.ndarray, y: np.ndarray, out: Path, x_test: Optional[np.ndarray] = None,
                y_test: Optional[np.ndarray] = None, **options) -> dict:
    """An .npz beside `out`, packed as `jobctl data pack --spec` would."""
    from jobs.datasets import load_dataset
    from jobs.datasets.pack import PackOptions, arrays_source, pack
    from jobs.spec import DataSpec

    npz = out.parent / f"{out.name}.npz"
    extra = {} if x_test is None else {"x_test": x_test, "y_test": y_test}
    np.savez(npz, x_train=x, y_train=y, **extra)
    spec = DataSpec(dataset="npz", path=str(npz), validation={"fraction": options.pop("validation_fraction", 0.2)})
    return pack(arrays_source(spec, load_dataset(spec)), out, PackOptions(**options)).manifest


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def run_workers(script: Path, n: int, tmp_path: Path, timeout: float = 300) -> list[tuple[int, str]]:
    """Run `script` as n workers of one cluster; [(exit code, output)] in worker order."""
    from bench.common import free_ports

    ports = free_ports(n)
    procs = []
    for i in range(n):
        env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "JOBCTL_WORKERS", "JOB_COMPLETION_INDEX")}
        env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT), JOBCTL_OFFLINE="1",
                   TF_CONFIG=tf_config(ports, i))
        log = tmp_path / f"worker{i}.log"
        procs.append((subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, stdout=log.open("w"),
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL), log))
    results = []
    try:
        for proc, log in procs:
            proc.wait(timeout=timeout)
            results.append((proc.returncode, log.read_text()))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results
