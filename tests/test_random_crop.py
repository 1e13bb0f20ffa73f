"""augmentation.crop_from, the ResNet recipe's "resize to 256, random 224 window, flip": a streamed training image
is a window of the stored pixels (decoded at crop_from, nothing resampled), an in-memory one a window of the image
enlarged to crop_from; evaluation and serving see data.resize; the crop stays on the host under placement: device;
and a spec that cannot crop is refused naming the field."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from jobs.inputs import IN_MEMORY, STREAMING, load_inputs
from jobs.spec import AugmentationSpec, DataSpec, SpecError, parse_spec
from tests.support.data_files import digits_folder, pack_folder

STORED, WINDOW = 20, 16


@pytest.fixture(scope="module")
def packed20(tmp_path_factory):
    root = tmp_path_factory.mktemp("crop")
    folder = digits_folder(root / "digits", per_class=12, classes=3, size=STORED)
    pack_folder(folder, root / "packed", encoding="png", shard_size=8)
    return {"folder": folder, "packed": root / "packed"}


def _train_batch(spec: DataSpec, augmentation: AugmentationSpec, seed: int = 0) -> tuple[str, np.ndarray]:
    inputs = load_inputs(spec)
    ds = inputs.train_dataset(64, seed=seed, augmentation=augmentation, shuffle_buffer=None, deterministic=True,
                              from_epoch=None)
    images, _ = next(iter(ds))
    return inputs.mode, images.numpy()


def _offsets(window: np.ndarray, stored: np.ndarray) -> set:
    """(top, left) of every place `window` appears exactly in one of `stored`."""
    views = sliding_window_view(stored, (WINDOW, WINDOW), axis=(1, 2))  # [n, dy, dx, c, WINDOW, WINDOW]
    hits = np.all(views == np.moveaxis(window, -1, 0)[None, None, None], axis=(3, 4, 5))
    return {(int(t), int(l)) for _, t, l in zip(*np.nonzero(hits))}


def test_a_streamed_training_image_is_an_exact_window_of_the_stored_pixels(packed20):
    packed = DataSpec(dataset="tfrecord", path=str(packed20["packed"]), resize=(WINDOW, WINDOW))
    stored = load_inputs(DataSpec(dataset="tfrecord", path=str(packed20["packed"]))).images("train", 1000)
    assert stored.shape[1:3] == (STORED, STORED)
    mode, batch = _train_batch(packed, AugmentationSpec(crop_from=(STORED, STORED)))
    assert mode == STREAMING and batch.shape[1:3] == (WINDOW, WINDOW)
    offsets = [_offsets(image, stored) for image in batch]
    assert all(offsets), "every training image is a window of a stored image, not resampled"
    assert len(set().union(*offsets)) > 5, "windows are drawn at random, not always the centre"
    # flip on top: each image is a window of the stored image or of its mirror
    _, flipped = _train_batch(packed, AugmentationSpec(crop_from=(STORED, STORED), flip="horizontal"), seed=1)
    mirrored = [bool(_offsets(image[:, ::-1], stored)) and not _offsets(image, stored) for image in flipped]
    assert all(_offsets(image, stored) or _offsets(image[:, ::-1], stored) for image in flipped)
    assert 0 < sum(mirrored) < len(flipped)
    # evaluation: data.resize, the whole image resized (as Keras' RandomCrop at inference), never a window
    inputs = load_inputs(packed)
    test, _ = next(iter(inputs.eval_dataset("test", 64, seed=0)))
    assert test.shape[1:3] == (WINDOW, WINDOW) and inputs.input_shape[:2] == (WINDOW, WINDOW)
    stored_test = load_inputs(DataSpec(dataset="tfrecord", path=str(packed20["packed"]))).images("test", 1000)
    import tensorflow as tf

    resized = tf.image.resize(tf.cast(stored_test, tf.float32), (WINDOW, WINDOW)).numpy()
    np.testing.assert_allclose(test.numpy(), np.round(resized), atol=1)  # in stored order
    assert not any(_offsets(image, stored_test) for image in test.numpy()), "no window: the whole image, resized"


def test_in_memory_windows_come_from_the_image_enlarged_to_crop_from(packed20):
    spec = DataSpec(dataset="image_folder", path=str(packed20["folder"]), resize=(WINDOW, WINDOW))
    mode, batch = _train_batch(spec, AugmentationSpec(crop_from=(STORED, STORED)))
    assert mode == IN_MEMORY and batch.shape[1:3] == (WINDOW, WINDOW)
    import tensorflow as tf

    x = load_inputs(spec).loaded.x_train
    enlarged = tf.image.resize(tf.cast(x, tf.float32), (STORED, STORED)).numpy()
    offsets = [_offsets(image, enlarged) for image in batch]
    assert all(offsets) and len(set().union(*offsets)) > 5


def test_placement_device_keeps_the_crop_on_the_host_and_leaves_the_rest_to_the_step(packed20):
    packed = DataSpec(dataset="tfrecord", path=str(packed20["packed"]), resize=(WINDOW, WINDOW))
    stored = load_inputs(DataSpec(dataset="tfrecord", path=str(packed20["packed"]))).images("train", 1000)
    _, batch = _train_batch(packed, AugmentationSpec(crop_from=(STORED, STORED), flip="horizontal", placement="device"))
    assert batch.shape[1:3] == (WINDOW, WINDOW)
    assert all(_offsets(image, stored) for image in batch), "cropped on the host; the flip is the step's"


@pytest.mark.parametrize("data, crop, expected", [
    ({"dataset": "digits"}, [10, 10], "augmentation.crop_from: [10, 10] needs data.resize"),
    ({"dataset": "digits", "resize": [16, 16]}, [20, 12], "augmentation.crop_from: [20, 12] is smaller than data.resize [16, 16]"),
    ({"dataset": "digits", "resize": [16, 16]}, [0, 20], "expected [height, width] of positive pixels, received [0, 20]"),
])
def test_a_spec_that_cannot_crop_is_refused_naming_the_field(data, crop, expected):
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "crop", "data": data, "model": {"type": "mlp"}, "augmentation": {"crop_from": crop}})
    assert expected in str(err.value)


@pytest.mark.slow
def test_packed_shards_train_on_random_windows_and_export_the_window_size(packed20, tmp_path):
    import io

    from jobs.training.loop import run
    from serving import savedmodel

    spec = parse_spec({
        "name": "crop", "seed": 2, "data": {"dataset": "tfrecord", "path": str(packed20["packed"]),
                                            "resize": [WINDOW, WINDOW]},
        "augmentation": {"crop_from": [STORED, STORED], "flip": "horizontal"},
        "model": {"type": "cnn", "conv_filters": [4], "padding": "same", "dense_units": [8]},
        "training": {"epochs": 1, "batch_size": 8}, "callbacks": {"tensorboard": {"enabled": False}},
        "export": {"warmup_requests": 2},
    })
    result = run(spec, artifacts_dir=str(tmp_path / "art"), run_id="r", out=io.StringIO())
    assert result.metrics["status"] == "succeeded" and result.metrics["data_mode"] == STREAMING
    served = savedmodel.load(result.export_path)
    answer = savedmodel.call(served.signatures["serving_default"],
                             {"images": np.zeros((2, WINDOW, WINDOW, 3), np.uint8)})
    assert answer["probabilities"].shape == (2, 3)


def test_packed_jpeg_windows_are_windows_of_the_decoded_image_with_or_without_exact_replay(tmp_path):
    """JPEG stored at crop_from, as the ResNet recipe packs it: the window is a window of the decoded image, to the
    pixel, whether or not training.deterministic asks for exact replay."""
    folder = digits_folder(tmp_path / "digits", per_class=12, classes=3, size=STORED)
    pack_folder(folder, tmp_path / "jpeg", encoding="jpeg", shard_size=8)
    packed = DataSpec(dataset="tfrecord", path=str(tmp_path / "jpeg"), resize=(WINDOW, WINDOW))
    stored = load_inputs(DataSpec(dataset="tfrecord", path=str(tmp_path / "jpeg"))).images("train", 1000)
    inputs = load_inputs(packed)
    crop = AugmentationSpec(crop_from=(STORED, STORED))
    for deterministic in (False, True):
        ds = inputs.train_dataset(64, seed=0, augmentation=crop, shuffle_buffer=None, deterministic=deterministic,
                                  from_epoch=None)
        batch = next(iter(ds))[0].numpy()
        assert batch.shape[1:3] == (WINDOW, WINDOW) and batch.dtype == np.uint8, "uint8 leaves the host"
        offsets = [_offsets(image, stored) for image in batch]
        assert all(offsets) and len(set().union(*offsets)) > 5, deterministic
