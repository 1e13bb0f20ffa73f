"""Streamed data (image folders and packed shards) against the in-memory loader: the same channels for grey, colour
and mixed folders under every data.color_mode; a record or file that does not decode, through the training entry
point (exit 2 naming it, or skipped and counted)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from jobs.inputs import IN_MEMORY, STREAMING, load_inputs
from jobs.spec import DataSpec
from tests.support.data_files import digits_folder, pack_folder

SIZE = 8


def _write_folder(root: Path, kind: str) -> Path:
    """root/<class>/<i>.png at the training size (no resize: both paths must agree to the bit): random colour
    images, some or all of them turned grey, RGBA or palette by Pillow."""
    from PIL import Image

    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            im = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
            if kind == "grey" or (kind == "mixed" and i % 2):
                im = im.convert("L")
            elif kind == "rgba-palette" and i % 2:
                im = im.convert("RGBA" if i % 4 == 1 else "P")
            im.save(root / c / f"{i}.png")
    return root


def _images(spec: DataSpec, split: str) -> tuple[str, np.ndarray]:
    inputs = load_inputs(spec)
    x = inputs.images(split, 1000)
    assert x.shape[1:] == inputs.input_shape
    # The two paths order a split alike only by seed; compare the images as a multiset.
    return inputs.mode, x[np.lexsort(x.reshape(len(x), -1).T)]


def _folder_spec(folder: Path, mode: str, **extra) -> DataSpec:
    return DataSpec(**{"dataset": "image_folder", "path": str(folder), "resize": (SIZE, SIZE), "color_mode": mode,
                       "test_fraction": 0.34, **extra})


@pytest.mark.parametrize("mode", ["keep", "grayscale", "rgb"])
@pytest.mark.parametrize("kind, kept_channels", [("grey", 1), ("mixed", 3), ("rgba-palette", 3)])
def test_a_streamed_folder_gives_the_in_memory_tensors_in_every_colour_mode(tmp_path, kind, kept_channels, mode):
    folder = _write_folder(tmp_path / "f", kind)
    in_mode, in_memory = _images(_folder_spec(folder, mode), "train")
    st_mode, streamed = _images(_folder_spec(folder, mode, in_memory_max_bytes=0), "train")
    assert (in_mode, st_mode) == (IN_MEMORY, STREAMING)
    assert in_memory.shape[-1] == {"keep": kept_channels, "grayscale": 1, "rgb": 3}[mode]
    assert streamed.shape == in_memory.shape
    np.testing.assert_array_equal(streamed, in_memory)


@pytest.mark.parametrize("encoding", ["png", "raw"])
@pytest.mark.parametrize("kind, packed_channels", [("grey", 1), ("mixed", 3)])
def test_packed_shards_give_the_in_memory_tensors_in_every_colour_mode(tmp_path, kind, packed_channels, encoding):
    folder = _write_folder(tmp_path / "f", kind)
    manifest = pack_folder(folder, tmp_path / "packed", encoding=encoding, shard_size=4)
    # An all-grey folder packs as one channel, as it loads in memory under 'keep'.
    assert manifest["image"]["channels"] == packed_channels
    for mode in ("keep", "grayscale", "rgb"):
        packed = DataSpec(dataset="tfrecord", path=str(tmp_path / "packed"), color_mode=mode)
        _, streamed = _images(packed, "test")
        _, in_memory = _images(_folder_spec(folder, mode, test_fraction=0.2), "test")
        assert streamed.shape == in_memory.shape, mode
        np.testing.assert_array_equal(streamed, in_memory, err_msg=mode)


# ----------------------------------------------------------------------------------- corrupt data, entry point
def _train(tmp_path: Path, data: dict, capsys) -> tuple[int, str, dict]:
    from jobs import train

    tmp_path.mkdir(exist_ok=True)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "corrupt", "seed": 1,
        "data": {"resize": [16, 16], **data},
        "model": {"type": "cnn", "conv_filters": [4], "dense_units": [8]},
        "training": {"epochs": 3, "batch_size": 8},
        "export": {"warmup_requests": 1},
    }))
    code = train.main(["--spec", str(spec), "--artifacts-dir", str(tmp_path / "art"), "--run-id", "r"])
    metrics_file = tmp_path / "art" / "runs" / "corrupt" / "r" / "metrics.json"
    return code, capsys.readouterr().err, json.loads(metrics_file.read_text()) if metrics_file.exists() else {}


def _corrupt_record(packed: Path, split: str, index: int) -> str:
    """Replace record `index` of the split's first shard by one whose image bytes are not a PNG, and record the new
    bytes in dataset.json (as a shard packed from a bad file would be: its checksum holds)."""
    import tensorflow as tf

    manifest = json.loads((packed / "dataset.json").read_text())
    shard = manifest["splits"][split]["shards"][0]
    path = packed / shard["file"]
    records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    example = tf.train.Example.FromString(records[index])
    example.features.feature["image"].bytes_list.value[0] = b"\x89PNG not really"
    records[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for r in records:
            writer.write(r)
    data = path.read_bytes()
    shard.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (packed / "dataset.json").write_text(json.dumps(manifest))
    return shard["file"]


@pytest.mark.slow
def test_a_corrupt_record_exits_2_naming_shard_and_record_or_is_skipped_and_counted(tmp_path, capsys):
    packed = tmp_path / "packed"
    pack_folder(digits_folder(tmp_path / "digits", per_class=12, classes=2), packed, encoding="png", shard_size=8)
    shard = _corrupt_record(packed, "train", 2)

    code, err, metrics = _train(tmp_path, {"dataset": "tfrecord", "path": str(packed)}, capsys)
    assert code == 2, err
    assert f"record 2 of shard {packed / shard}" in err
    assert "expected a tf.train.Example holding 'image' (png bytes" in err and "corrupt_records: skip" in err
    assert metrics["status"] == "failed"

    code, err, metrics = _train(tmp_path / "skip", {"dataset": "tfrecord", "path": str(packed),
                                                    "corrupt_records": "skip"}, capsys)
    assert code == 0, err
    # The one bad record, met again on every pass (and by the normalization sample and the warmup): counted once.
    assert metrics["skipped_records"] == 1, metrics


@pytest.mark.slow
def test_an_undecodable_image_in_a_streamed_folder_exits_2_naming_it_or_is_skipped_and_counted(tmp_path, capsys):
    folder = digits_folder(tmp_path / "digits", per_class=12, classes=2)
    bad = folder / "1" / "005.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = {"dataset": "image_folder", "path": str(folder), "in_memory_max_bytes": 0,
            "validation": {"use_test": True}, "test_fraction": 0.25}

    code, err, _ = _train(tmp_path, data, capsys)
    assert code == 2, err
    assert f"file {bad} does not decode" in err and "expected an image file TensorFlow decodes" in err

    code, err, metrics = _train(tmp_path / "skip", {**data, "corrupt_records": "skip"}, capsys)
    assert code == 0, err
    assert metrics["data_mode"] == STREAMING and metrics["skipped_records"] == 1, metrics


@pytest.mark.slow
def test_a_shard_damaged_mid_file_names_the_first_lost_record_or_counts_every_lost_one(tmp_path, capsys):
    """Bytes flipped inside a shard (its checksum not verified): the TFRecord reader stops at the damage, so every
    record from there to the shard's end is lost; exit 2 names the first, or skip counts them all."""
    packed = tmp_path / "packed"
    manifest = pack_folder(digits_folder(tmp_path / "digits", per_class=12, classes=2), packed, encoding="png",
                           shard_size=8)
    shard = packed / manifest["splits"]["train"]["shards"][0]["file"]
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2: len(damaged) // 2 + 4] = b"\xff\x00\xff\x00"
    shard.write_bytes(bytes(damaged))
    data = {"dataset": "tfrecord", "path": str(packed), "verify_checksums": False}

    code, err, _ = _train(tmp_path, data, capsys)
    assert code == 2, err
    assert f"record 4 of shard {shard} does not decode" in err

    code, err, metrics = _train(tmp_path / "skip", {**data, "corrupt_records": "skip"}, capsys)
    assert code == 0, err
    assert metrics["skipped_records"] == 4, metrics  # records 4 to 7 of an 8-record shard


@pytest.mark.slow
def test_streamed_validation_ends_without_keras_warning_that_training_was_interrupted(tmp_path, capsys):
    import warnings

    packed = tmp_path / "packed"
    pack_folder(digits_folder(tmp_path / "digits", per_class=12, classes=2), packed, encoding="png", shard_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err, metrics = _train(tmp_path, {"dataset": "tfrecord", "path": str(packed)}, capsys)
    assert code == 0, err
    assert metrics["epochs_run"] == 3
    assert not [w for w in caught if "ran out of data" in str(w.message)]
