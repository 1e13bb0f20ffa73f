"""Streamed data (image folders and packed shards) against the in-memory loader: the same channels for grey, colour
and mixed folders under every data.color_mode; a record or file that does not decode, through the training entry
point (exit 2 naming it, or skipped and counted); the log line saying which path was taken and why; a packed
directory that is not right (a missing shard, a checksum that does not match, other classes, an unreadable gs://)
stops before training with the documented exit code."""

import hashlib
import json
import re
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


# ------------------------------------------------------------------------------ which path, and why (the log)
def test_the_log_says_which_path_was_taken_and_why(tmp_path, caplog):
    """The estimated decoded size (images x H x W x C bytes) against data.in_memory_max_bytes decides, at the
    boundary as documented (equal fits), and the log line gives both figures."""
    import logging

    caplog.set_level(logging.INFO, logger="jobs.inputs")
    folder = _write_folder(tmp_path / "f", "grey")  # 12 grey images: 12 x 8x8x1 = 768 bytes decoded

    def line(**extra) -> str:
        caplog.clear()
        inputs = load_inputs(_folder_spec(folder, "keep", **extra))
        [message] = [r.getMessage() for r in caplog.records if r.name == "jobs.inputs"]
        assert message.startswith(f"data: {inputs.mode}: ")
        return message

    assert line() == ("data: in-memory: image folder decoded into memory: 12 images x 8x8x1 = 768 bytes <= "
                      "data.in_memory_max_bytes (2.00 GB)")
    assert line(in_memory_max_bytes=768) == ("data: in-memory: image folder decoded into memory: 12 images x 8x8x1 = "
                                             "768 bytes <= data.in_memory_max_bytes (768 bytes)")
    assert line(in_memory_max_bytes=767) == ("data: streaming: image folder streams from disk: 12 images x 8x8x1 = "
                                             "768 bytes decoded > data.in_memory_max_bytes (767 bytes)")
    pack_folder(folder, tmp_path / "packed", encoding="png", shard_size=4)
    caplog.clear()
    load_inputs(DataSpec(dataset="tfrecord", path=str(tmp_path / "packed")))
    assert [r.getMessage() for r in caplog.records if r.name == "jobs.inputs"] == [
        f"data: streaming: packed TFRecord shards stream from {tmp_path / 'packed'} (2 train shards; png images "
        "decoded to 8x8x1)"]


# ------------------------------------------------------------------------- a packed directory that is not right
@pytest.fixture(scope="module")
def packed_digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packed-digits")
    pack_folder(digits_folder(root / "digits", per_class=12, classes=2), root / "packed", encoding="png", shard_size=8)
    return root / "packed"


def _copy(packed: Path, tmp_path: Path) -> tuple[Path, dict]:
    import shutil

    shutil.copytree(packed, tmp_path / "packed")
    return tmp_path / "packed", json.loads((packed / "dataset.json").read_text())


def test_a_missing_shard_exits_3_naming_it_before_training(packed_digits, tmp_path, capsys):
    packed, manifest = _copy(packed_digits, tmp_path)
    gone = packed / manifest["splits"]["train"]["shards"][1]["file"]
    gone.unlink()
    code, err, metrics = _train(tmp_path, {"dataset": "tfrecord", "path": str(packed)}, capsys)
    assert code == 3, err
    assert f"data.path: 1 shard listed in '{packed / 'dataset.json'}' not found: {gone}" in err
    assert metrics["status"] == "failed" and metrics["epochs_finished"] == 0


def test_a_shard_whose_checksum_does_not_match_exits_2_before_training(packed_digits, tmp_path, capsys):
    packed, manifest = _copy(packed_digits, tmp_path)
    shard = manifest["splits"]["validation"]["shards"][0]
    path = packed / shard["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size: only the checksum can tell
    path.write_bytes(bytes(data))
    found = hashlib.sha256(bytes(data)).hexdigest()
    code, err, metrics = _train(tmp_path, {"dataset": "tfrecord", "path": str(packed)}, capsys)
    assert code == 2, err
    assert f"shard '{path}' has sha256 {found}; dataset.json says {shard['sha256']} (corrupt or replaced)" in err
    assert "data.verify_checksums: false" in err
    assert metrics["status"] == "failed" and metrics["epochs_finished"] == 0


def test_class_names_that_disagree_with_dataset_json_exit_2(packed_digits, tmp_path, capsys):
    code, err, _ = _train(tmp_path, {"dataset": "tfrecord", "path": str(packed_digits), "class_names": ["1", "0"]},
                          capsys)
    assert code == 2, err
    assert (f"data.class_names: ['1', '0'] disagree with the classes of the packed data ['0', '1'] "
            f"({packed_digits / 'dataset.json'})") in err


def test_an_unreadable_gs_path_exits_3_naming_the_path_and_the_cause(tmp_path, capsys, monkeypatch):
    """Read through tf.io.gfile's GCS filesystem. Offline (as here) the cause is the failed name lookup, which fails
    at once; NO_GCE_CHECK skips the metadata-server probe for credentials that could otherwise wait on a network."""
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    where = "gs://jobctl-test-no-such-bucket-7f3a/dogs-packed"
    code, err, _ = _train(tmp_path, {"dataset": "tfrecord", "path": where}, capsys)
    assert code == 3, err
    read_error = f"data.path: cannot read '{where}/dataset.json': "
    if read_error in err:  # offline (as here): TensorFlow's words, after the exception type
        cause = err.split(read_error, 1)[1].splitlines()[0]
        assert re.match(r"\w+Error: \S", cause), err
    else:  # with a network, GCS answers for the bucket nobody has
        assert f"data.path: '{where}' has no dataset.json" in err, err


# ------------------------------------------------------------------------------ train, export, serve; resume
@pytest.fixture(scope="module")
def digits3(tmp_path_factory) -> dict:
    """A 3-class digits folder (16x16 RGB PNGs), and the same images packed losslessly with the same split."""
    root = tmp_path_factory.mktemp("digits3")
    folder = digits_folder(root / "digits", per_class=20, classes=3)
    pack_folder(folder, root / "packed", encoding="png", shard_size=8)
    return {"folder": folder, "packed": root / "packed",
            "data": {"packed": {"dataset": "tfrecord", "path": str(root / "packed")},
                     "folder": {"dataset": "image_folder", "path": str(folder), "resize": [16, 16],
                                "in_memory_max_bytes": 0}}}


@pytest.mark.slow
@pytest.mark.parametrize("source", ["packed", "folder"])
def test_streamed_data_trains_exports_and_the_export_serves_the_test_split(digits3, tmp_path, source):
    """Packed shards, and an image folder forced to stream: one epoch through the training loop, the export loaded
    as the model server loads it, and its answers on the test images score exactly the test accuracy training
    reported (so the export is the trained model, taking the raw pixels the loader gives)."""
    import io

    from jobs.datasets import load_dataset
    from jobs.spec import parse_spec
    from jobs.training.loop import run
    from serving import savedmodel

    spec = parse_spec({
        "name": f"stream-{source}", "seed": 2, "data": digits3["data"][source],
        "model": {"type": "cnn", "conv_filters": [4], "padding": "same", "dense_units": [8]},
        "training": {"epochs": 1, "batch_size": 8}, "callbacks": {"tensorboard": {"enabled": False}},
        "export": {"warmup_requests": 2},
    })
    out = io.StringIO()
    result = run(spec, artifacts_dir=str(tmp_path / "art"), run_id="r", out=out)
    assert result.metrics["status"] == "succeeded" and result.metrics["data_mode"] == STREAMING
    assert "data: streaming: " in out.getvalue()

    served = savedmodel.load(result.export_path)
    assert served.class_names == ["0", "1", "2"]
    # The test split the in-memory loader makes of the folder: the images the streamed run was tested on (the
    # parity tests above), in another order.
    test = load_dataset(DataSpec(dataset="image_folder", path=str(digits3["folder"]), resize=(16, 16)))
    assert len(test.x_test) == result.metrics["num_test"] == 12
    answer = savedmodel.call(served.signatures["serving_default"], {"images": test.x_test})
    assert answer["probabilities"].shape == (12, 3)
    np.testing.assert_allclose(answer["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(answer["class_ids"] == test.y_test) == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)


def _epochs(spec: DataSpec, from_epoch: int, passes: int, deterministic: bool, seed: int = 5) -> list[tuple]:
    """(images, labels) of each of `passes` training epochs from `from_epoch` on, as the training loop asks for them
    (a resumed run: from the backed-up epoch)."""
    inputs = load_inputs(spec)
    batches = -(-inputs.counts["train"] // 4)
    ds = inputs.train_dataset(4, seed=seed, augmentation=None, shuffle_buffer=None, deterministic=deterministic,
                              from_epoch=from_epoch)
    got = [(x.numpy(), y.numpy()) for x, y in ds.take(batches * passes)]
    return [(np.concatenate([x for x, _ in got[e * batches:(e + 1) * batches]]),
             np.concatenate([y for _, y in got[e * batches:(e + 1) * batches]])) for e in range(passes)]


@pytest.mark.parametrize("source", ["packed", "folder"])
def test_a_resumed_streamed_epoch_sees_what_docs_data_md_says(digits3, source):
    """docs/data.md, "Resume": each pass's file order and shuffle come from (seed, epoch). With
    training.deterministic the epochs a run resumed at epoch 2 trains on are the uninterrupted run's epochs 2 and 3,
    batch for batch; without it, each resumed epoch still holds every training example once (in another order)."""
    # A shuffle buffer of 1 leaves the file order alone to see; the default buffer holds the whole split.
    for buffer in (1, 2048):
        spec = DataSpec(**digits3["data"][source], stream_shuffle_buffer=buffer)
        whole = _epochs(spec, 0, 4, deterministic=True)
        resumed = _epochs(spec, 2, 2, deterministic=True)
        for (x, y), (x_want, y_want) in zip(resumed, whole[2:]):
            np.testing.assert_array_equal(x, x_want, err_msg=f"buffer {buffer}")
            np.testing.assert_array_equal(y, y_want, err_msg=f"buffer {buffer}")
        # The order is drawn per epoch and per seed, not once.
        assert not np.array_equal(whole[2][0], whole[3][0]), buffer
        assert not np.array_equal(_epochs(spec, 2, 1, deterministic=True, seed=6)[0][0], whole[2][0]), buffer

    def as_set(x: np.ndarray) -> np.ndarray:
        return x[np.lexsort(x.reshape(len(x), -1).T)]

    for x, _ in _epochs(spec, 2, 2, deterministic=False):
        assert len(x) == len(whole[0][0])
        np.testing.assert_array_equal(as_set(x), as_set(whole[0][0]))
