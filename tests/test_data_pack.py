"""`jobctl data pack`: the packed directory's contents, resume after an interruption, refusals."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from jobs import exit_codes
from jobs.errors import BadInputError
from tests.support.data_files import pack_folder, photo_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"), per_class=15)


def test_pack_a_folder_from_the_cli_writes_shards_and_a_manifest_that_match(photos, tmp_path):
    out = tmp_path / "packed"
    result = runner.invoke(app, ["data", "pack", str(photos), "-o", str(out), "--resize", "32x40", "--shard-size", "4"])
    assert result.exit_code == 0, result.output
    assert "train on it with: data: {dataset: tfrecord" in result.output
    m = json.loads((out / "dataset.json").read_text())
    assert m["class_names"] == ["china", "flower"]
    assert m["image"] == {"encoding": "jpeg", "shape": [32, 40, 3], "channels": 3, "pixel_max": 255.0,
                          "resize": [32, 40], "quality": 90}
    # 30 images: 6 held out for test (0.2 per class), 24 left: the last 0.2 (5) validate
    assert {s: m["splits"][s]["count"] for s in m["splits"]} == {"train": 19, "validation": 5, "test": 6}
    assert m["splits"]["test"]["per_class"] == [3, 3]
    for split in m["splits"].values():
        assert sum(split["per_class"]) == split["count"] == sum(s["count"] for s in split["shards"])
        for shard in split["shards"]:
            blob = (out / shard["file"]).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == shard["sha256"] and len(blob) == shard["bytes"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dataset.json"] + [s["file"] for split in m["splits"].values() for s in split["shards"]])  # nothing else left


def test_the_records_hold_the_images_and_labels_of_the_folder_split(photos, tmp_path):
    import tensorflow as tf
    from PIL import Image

    from jobs.datasets.folder_files import list_folder, split_files
    from jobs.spec import DataSpec

    m = pack_folder(photos, tmp_path / "p", encoding="raw", resize=(12, 16), shard_size=5)
    files, labels = split_files(list_folder(DataSpec(dataset="image_folder", path=str(photos))), DataSpec(
        dataset="image_folder", path=str(photos)))["test"]
    shards = [str(tmp_path / "p" / s["file"]) for s in m["splits"]["test"]["shards"]]
    feats = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    records = [tf.io.parse_single_example(r, feats) for r in tf.data.TFRecordDataset(shards)]
    assert [int(r["label"]) for r in records] == labels.tolist()
    want = np.asarray(Image.open(files[0]).convert("RGB").resize((16, 12), Image.Resampling.BILINEAR))
    got = np.frombuffer(records[0]["image"].numpy(), np.uint8).reshape(12, 16, 3)
    np.testing.assert_array_equal(got, want)


def test_an_interrupted_pack_leaves_no_readable_half_and_resumes_keeping_verified_shards(photos, tmp_path, monkeypatch):
    from jobs.datasets import pack as pack_mod
    from jobs.datasets.packed import read_manifest
    from jobs.errors import DataUnavailableError

    whole = pack_folder(photos, tmp_path / "whole", encoding="png", resize=(16, 16), shard_size=3, workers=1)
    out = tmp_path / "p"
    real_encode, calls = pack_mod._encode, [0]

    def dying_encode(*a, **k):
        calls[0] += 1
        if calls[0] == 11:  # mid-shard: 3 shards done, the 4th half written
            raise KeyboardInterrupt
        return real_encode(*a, **k)

    monkeypatch.setattr(pack_mod, "_encode", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        pack_folder(photos, out, encoding="png", resize=(16, 16), shard_size=3, workers=1)
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    # Shards 1-3 were done, the 4th died half-way; the writer may have finished one more before stopping.
    assert visible[:3] == ["train-00000-of-00007.tfrecord", "train-00001-of-00007.tfrecord", "train-00002-of-00007.tfrecord"]
    assert "train-00003-of-00007.tfrecord" not in visible and len(visible) <= 4
    for name in visible:  # every visible shard is whole: its sidecar's checksum matches
        side = json.loads((out / f".{name}.sha256.json").read_text())
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == side["sha256"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))  # the half shard is gone, never renamed
    with pytest.raises(DataUnavailableError, match="unfinished pack"):
        read_manifest(str(out))

    monkeypatch.setattr(pack_mod, "_encode", real_encode)
    (out / "train-00001-of-00007.tfrecord").write_bytes(b"bit rot")  # a kept shard must match its checksum
    result = runner.invoke(app, ["data", "pack", str(photos), "-o", str(out), "--encoding", "png", "--resize", "16x16",
                                 "--shard-size", "3"])
    assert result.exit_code == 0, result.output
    assert f"kept {len(visible) - 1} complete shards of an interrupted pack" in result.output
    assert json.loads((out / "dataset.json").read_text())["splits"] == whole["splits"]  # same bytes as one clean run
    again = runner.invoke(app, ["data", "pack", str(photos), "-o", str(out), "--encoding", "png", "--resize", "16x16",
                                "--shard-size", "3"])
    assert again.exit_code == 0 and "already holds this pack" in again.output


def test_packing_into_a_directory_holding_another_dataset_is_refused(photos, tmp_path):
    out = tmp_path / "p"
    pack_folder(photos, out, resize=(16, 16))
    result = runner.invoke(app, ["data", "pack", str(photos), "-o", str(out), "--resize", "20x20"])
    assert result.exit_code == exit_codes.BAD_SPEC
    assert "holds another packed dataset" in result.output and "expected an empty directory" in result.output
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BadInputError, match=r"is not empty \(notes.txt\)"):
        pack_folder(photos, tmp_path / "other")


@pytest.mark.parametrize("args, message", [
    (["--encoding", "webp"], "--encoding: expected one of ['jpeg', 'png', 'raw'], received 'webp'"),
    (["--resize", "big"], "--resize: expected HEIGHTxWIDTH"),
    (["--shard-size", "0"], "--shard-size: expected at least 1"),
])
def test_bad_pack_arguments_exit_2_naming_the_option(photos, tmp_path, args, message):
    result = runner.invoke(app, ["data", "pack", str(photos), "-o", str(tmp_path / "p"), *args])
    assert result.exit_code == exit_codes.BAD_SPEC and message in result.output


def test_pack_a_spec_source_raw_keeps_every_pixel(tmp_path):
    from jobs.datasets.digits import digits_arrays

    images, target = digits_arrays()
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: {dataset: digits}\n")
    result = runner.invoke(app, ["data", "pack", "--spec", str(spec), "-o", str(tmp_path / "p"), "--encoding", "raw"])
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "p" / "dataset.json").read_text())
    assert m["image"]["shape"] == [8, 8, 1] and m["image"]["pixel_max"] == 16.0
    assert sum(m["splits"][s]["count"] for s in m["splits"]) == len(images) == 1797
