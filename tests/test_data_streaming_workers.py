"""Streamed data split across workers by file, with real worker processes on 127.0.0.1 and TF_CONFIG as pods get
it (as tests/test_distributed.py::test_each_worker_reads_its_own_examples does for in-memory data): across 2 or 3
workers one epoch of packed shards, and of an image folder, covers every training example exactly once; fewer
shards than workers stops every worker before training, exit 2, naming data.path and the counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support.data_files import pack_folder, run_workers

pytestmark = pytest.mark.slow

PER_CLASS = 25
BATCH = 6  # global: 3 per replica on 2 workers, 2 on 3


def id_folder(root: Path) -> Path:
    """root/<class>/<id>.png: 8x8 grey images whose every pixel is the example's id (1..50), so a worker can say
    which examples it read from the batches it got."""
    from PIL import Image

    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            ident = 1 + c * PER_CLASS + i
            Image.fromarray(np.full((8, 8), ident, np.uint8)).save(root / name / f"{ident:03d}.png")
    return root


def training_ids(folder: Path) -> list[int]:
    """The ids of the training split: the one the streaming reader and the packer both make with data.split_seed."""
    from jobs.datasets.folder_files import list_folder, split_files
    from jobs.spec import DataSpec

    spec = DataSpec(dataset="image_folder", path=str(folder))
    return sorted(int(Path(f).stem) for f in split_files(list_folder(spec), spec)["train"][0])


PROBE = """
import json
import numpy as np
from jobs import distribute
info = distribute.select_strategy("auto", worker_timeout=90)
from jobs.inputs import load_inputs
from jobs.spec import DataSpec
for name, raw in json.loads({specs!r}).items():
    data = load_inputs(DataSpec(**raw), num_workers=info.workers, worker_index=info.task_index)
    # What training iterates under MultiWorkerMirroredStrategy: one pass, distributed by the strategy.
    ds = data.train_dataset({batch}, seed=3, augmentation=None, shuffle_buffer=None, deterministic=False,
                            from_epoch=None)
    seen = []
    for batch in info.strategy.experimental_distribute_dataset(ds):
        for t in info.strategy.experimental_local_results(batch[0]):
            images = np.rint(t.numpy()).astype(int)
            assert (images == images[:, :1, :1, :1]).all(), "an image is not its id"
            seen += images[:, 0, 0, 0].tolist()
    print("SEEN", name, data.mode, json.dumps(seen), flush=True)
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sources")
    folder = id_folder(root / "ids")
    manifest = pack_folder(folder, root / "packed", encoding="png", shard_size=3)
    assert len(manifest["splits"]["train"]["shards"]) == 11  # 32 training examples, 3 a shard
    return {"folder": folder, "packed": root / "packed", "train": training_ids(folder),
            "specs": {"packed": {"dataset": "tfrecord", "path": str(root / "packed")},
                      "folder": {"dataset": "image_folder", "path": str(folder), "resize": [8, 8],
                                 "in_memory_max_bytes": 0}}}


@pytest.mark.parametrize("n", [2, 3])
def test_one_streamed_epoch_over_n_workers_reads_every_example_exactly_once(sources, tmp_path, n):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE.format(specs=json.dumps(sources["specs"]), batch=BATCH))
    results = run_workers(probe, n, tmp_path, timeout=240)
    assert [code for code, _ in results] == [0] * n, "\n".join(out[-3000:] for _, out in results)
    want = sources["train"]
    assert len(want) == 32
    for name in ("packed", "folder"):
        seen = []
        for _, out in results:
            [line] = [ln for ln in out.splitlines() if ln.startswith(f"SEEN {name} ")]
            mode, ids = line.split(" ", 3)[2:]
            assert mode == "streaming"
            seen.append(json.loads(ids))
        for i in range(n):
            for j in range(i + 1, n):
                assert not set(seen[i]) & set(seen[j]), (name, i, j)  # no example on two workers
            assert len(seen[i]) == len(set(seen[i])) and seen[i], (name, i)  # none twice, none idle
        assert sorted(sum(seen, [])) == want, name  # every one of them


def test_fewer_shards_than_workers_exits_2_before_training_naming_data_path_and_the_counts(sources, tmp_path):
    packed = tmp_path / "one-shard"
    pack_folder(sources["folder"], packed, encoding="png", shard_size=1000)  # 1 shard a split
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "few", "data": {"dataset": "tfrecord", "path": str(packed)},
        "model": {"type": "cnn", "conv_filters": [4], "dense_units": [8]},
        "training": {"epochs": 1, "batch_size": 4}, "distribution": {"worker_timeout_seconds": 60},
    }))
    script = tmp_path / "train.py"  # what `python -m jobs.train` runs
    script.write_text("import sys\nfrom jobs.train import main\n"
                      f"sys.exit(main(['--spec', {str(spec)!r}, '--artifacts-dir', {str(tmp_path / 'art')!r}, "
                      "'--run-id', 'r']))\n")
    results = run_workers(script, 2, tmp_path, timeout=180)
    for code, out in results:
        assert code == 2, out[-3000:]
        assert (f"data.path: {packed} (train split) has 1 file(s) for 2 workers; expected at least one per worker "
                "(pack with a smaller --shard-size to get more shards)") in out
        assert not [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    metrics = json.loads((tmp_path / "art" / "runs" / "few" / "r" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["epochs_finished"] == 0
