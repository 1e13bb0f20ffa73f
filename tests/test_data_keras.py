"""The Keras datasets read from files written in each format's exact on-disk layout (nothing is downloaded).

The writers below follow the published formats byte for byte (CIFAR python pickles with bytes keys and R/G/B planes,
gzip'd IDX with magic numbers, mnist.npz); tests/test_data_keras_parity.py checks that Keras' own loaders read them
the same way, so these tests are not merely round trips of our own reader.
"""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest

from jobs.datasets import (
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    DataUnavailable,
    load_dataset,
)
from jobs.spec import DataSpec
from tests.support.keras_files import write_cifar10, write_cifar100, write_fashion_mnist, write_mnist


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    return home


def _no_split(**kw) -> DataSpec:
    # Validate on the test set so the training arrays are exactly what the files hold, in order.
    return DataSpec(validation={"use_test": True}, **kw)


# ------------------------------------------------------------------------------------------------ cifar10
def test_cifar10_keras3_cache_layout_pixels_channels_labels_and_names(keras_home):
    folder = keras_home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    written = write_cifar10(folder)
    # Plant one pixel by hand in the raw row of data_batch_1, image 0, at row 2, column 5: R, G and B planes.
    d = pickle.loads((folder / "data_batch_1").read_bytes())
    d[b"data"][0, 2 * 32 + 5] = 201
    d[b"data"][0, 1024 + 2 * 32 + 5] = 17
    d[b"data"][0, 2048 + 2 * 32 + 5] = 99
    d[b"labels"][0] = 7
    (folder / "data_batch_1").write_bytes(pickle.dumps(d, protocol=4))

    data = load_dataset(_no_split(dataset="cifar10"))

    assert data.x_train.shape == (20, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert tuple(data.x_train[0, 2, 5]) == (201, 17, 99)  # R, G, B in that order, not planes mixed up
    assert data.y_train[0] == 7 and data.class_names[7] == "horse"
    # Batches are concatenated in order 1..5, the test batch kept apart.
    np.testing.assert_array_equal(data.x_train[4:8], written["data_batch_2"][0])
    np.testing.assert_array_equal(data.y_train[16:], written["data_batch_5"][1])
    np.testing.assert_array_equal(data.x_test, written["test_batch"][0])
    np.testing.assert_array_equal(data.y_test, written["test_batch"][1])
    assert data.class_names == CIFAR10_CLASSES and data.pixel_max == 255.0
    assert data.input_shape == (32, 32, 3) and data.num_classes == 10


def test_cifar10_reads_the_tf_keras_layout_and_a_folder_named_by_data_path(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    legacy = tmp_path / "cache"
    written = write_cifar10(legacy / "cifar-10-batches-py", seed=1)
    data = load_dataset(_no_split(dataset="cifar10", path=str(legacy)))
    np.testing.assert_array_equal(data.x_test, written["test_batch"][0])

    # data.path straight at the extracted batches, without meta: names fall back to the built-in list.
    plain = tmp_path / "batches"
    written = write_cifar10(plain, seed=2, meta=False)
    data = load_dataset(_no_split(dataset="cifar10", path=str(plain)))
    np.testing.assert_array_equal(data.x_train[:4], written["data_batch_1"][0])
    assert data.class_names == CIFAR10_CLASSES


def test_cifar10_meta_names_are_used_and_data_class_names_rename(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    write_cifar10(tmp_path / "cifar-10-batches-py")
    names = [f"c{i}" for i in range(10)]
    d = pickle.loads((tmp_path / "cifar-10-batches-py" / "batches.meta").read_bytes())
    d[b"label_names"] = [n.encode() for n in names]
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(pickle.dumps(d, protocol=4))
    assert load_dataset(_no_split(dataset="cifar10", path=str(tmp_path))).class_names == names
    renamed = [f"k{i}" for i in range(10)]
    assert load_dataset(_no_split(dataset="cifar10", path=str(tmp_path), class_names=renamed)).class_names == renamed
    with pytest.raises(ValueError, match=r"data.class_names has 3 names but dataset 'cifar10' has 10 classes"):
        load_dataset(_no_split(dataset="cifar10", path=str(tmp_path), class_names=["a", "b", "c"]))


def test_cifar10_read_straight_from_the_downloaded_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    staging = tmp_path / "staging"
    written = write_cifar10(staging / "cifar-10-batches-py", seed=3)
    cache = tmp_path / "cache"
    cache.mkdir()
    with tarfile.open(cache / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = load_dataset(_no_split(dataset="cifar10", path=str(cache)))
    np.testing.assert_array_equal(data.x_train[16:], written["data_batch_5"][0])
    np.testing.assert_array_equal(data.y_test, written["test_batch"][1])


def test_cifar10_rejects_a_file_that_is_not_a_cifar_pickle(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)
    (folder / "data_batch_3").write_bytes(b"<html>404</html>")
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR python pickle"):
        load_dataset(_no_split(dataset="cifar10", path=str(tmp_path)))


def test_cifar_pickles_may_not_run_code(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=4))
    with pytest.raises(ValueError, match=r"refusing to load builtins.print"):
        load_dataset(_no_split(dataset="cifar10", path=str(tmp_path)))


# ----------------------------------------------------------------------------------------------- cifar100
@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_cifar100_fine_and_coarse_labels(keras_home, mode):
    folder = keras_home / "datasets" / "cifar-100-python-target" / "cifar-100-python"
    written = write_cifar100(folder)
    data = load_dataset(_no_split(dataset="cifar100", cifar100_label_mode=mode))
    imgs, fine, coarse = written["train"]
    np.testing.assert_array_equal(data.x_train, imgs)
    np.testing.assert_array_equal(data.y_train, fine if mode == "fine" else coarse)
    np.testing.assert_array_equal(data.y_test, written["test"][1 if mode == "fine" else 2])
    assert data.num_classes == (100 if mode == "fine" else 20)
    assert data.class_names[3] == ("bear" if mode == "fine" else "food_containers")


def test_cifar100_builtin_names_match_the_published_groups():
    assert len(CIFAR100_FINE_CLASSES) == 100 == len(set(CIFAR100_FINE_CLASSES))
    assert len(CIFAR100_COARSE_CLASSES) == 20 == len(set(CIFAR100_COARSE_CLASSES))
    assert CIFAR100_FINE_CLASSES == sorted(CIFAR100_FINE_CLASSES)  # the fine names are alphabetical in `meta`


# ------------------------------------------------------------------------------------- (fashion-)mnist
def test_fashion_mnist_idx_files_pixels_labels_and_names(keras_home):
    written = write_fashion_mnist(keras_home / "datasets" / "fashion-mnist")
    data = load_dataset(_no_split(dataset="fashion_mnist"))
    x, y = written["train"]
    assert data.x_train.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], x)
    np.testing.assert_array_equal(data.y_train, y)
    np.testing.assert_array_equal(data.x_test[..., 0], written["t10k"][0])
    assert data.class_names == FASHION_MNIST_CLASSES and data.class_names[9] == "Ankle boot"


def test_fashion_mnist_wrong_magic_names_the_file(keras_home):
    folder = keras_home / "datasets" / "fashion-mnist"
    write_fashion_mnist(folder)
    labels = (folder / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(labels)  # a labels file where images belong
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz has magic number 2049; expected 2051"):
        load_dataset(_no_split(dataset="fashion_mnist"))


def test_mnist_npz_and_colour_and_resize_conversion(keras_home):
    arrays = write_mnist(keras_home / "datasets" / "mnist.npz")
    data = load_dataset(_no_split(dataset="mnist"))
    np.testing.assert_array_equal(data.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert data.class_names == [str(i) for i in range(10)]

    rgb = load_dataset(_no_split(dataset="mnist", color_mode="rgb", resize=(14, 21)))
    assert rgb.x_train.shape == (10, 14, 21, 3)
    np.testing.assert_array_equal(rgb.x_train[..., 0], rgb.x_train[..., 2])


@pytest.mark.parametrize("split, n_x, n_y", [("train", 20, 15), ("test", 5, 7)])
def test_mnist_images_and_labels_of_different_lengths_are_refused(keras_home, tmp_path, capsys, split, n_x, n_y):
    path = keras_home / "datasets" / "mnist.npz"
    arrays = write_mnist(path, n_train=20)
    arrays[f"y_{split}"] = np.resize(arrays[f"y_{split}"], n_y)
    np.savez(path, **arrays)
    with pytest.raises(
        ValueError,
        match=rf"^data.dataset: 'mnist': mnist.npz has {n_x} images in 'x_{split}' but {n_y} labels in 'y_{split}'; "
        "expected one label per image",
    ):
        load_dataset(_no_split(dataset="mnist"))

    from jobs.datasets.describe import main

    (tmp_path / "s.yaml").write_text("name: t\ndata: {dataset: mnist}\n")
    assert main(["--spec", str(tmp_path / "s.yaml")]) == 2  # bad data, before TensorFlow sees it
    assert "one label per image" in capsys.readouterr().err


def test_mnist_file_that_is_not_an_npz_says_so_without_suggesting_pickle(keras_home):
    path = keras_home / "datasets" / "mnist.npz"
    path.parent.mkdir(parents=True)
    path.write_text("<html>a proxy's error page</html>")
    with pytest.raises(ValueError, match=r"^data.dataset: 'mnist': mnist.npz is not a NumPy .npz archive; expected") as err:
        load_dataset(_no_split(dataset="mnist"))
    assert "pickle" not in str(err.value)


def test_keras_home_is_respected_over_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_mnist(tmp_path / "home" / ".keras" / "datasets" / "mnist.npz", seed=1)
    other = write_mnist(tmp_path / "kh" / "datasets" / "mnist.npz", seed=2)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    np.testing.assert_array_equal(load_dataset(_no_split(dataset="mnist")).x_test[..., 0], other["x_test"])
    monkeypatch.delenv("KERAS_HOME")
    assert load_dataset(_no_split(dataset="mnist")).x_test.shape == (5, 28, 28, 1)  # ~/.keras/datasets


# --------------------------------------------------------------------------------------- missing files
@pytest.mark.parametrize(
    "dataset, wanted",
    [
        ("mnist", "mnist.npz in {d}/"),
        ("fashion_mnist", "t10k-images-idx3-ubyte.gz in {d}/fashion-mnist/"),
        ("cifar10", "test_batch in {d}/cifar-10-batches-py-target/cifar-10-batches-py/"),
        ("cifar100", "train, test in {d}/cifar-100-python-target/cifar-100-python/"),
    ],
)
def test_missing_files_offline_name_the_files_and_never_touch_the_network(keras_home, monkeypatch, dataset, wanted):
    def no_network(*a, **k):
        raise AssertionError("the network was used")

    monkeypatch.setattr("socket.getaddrinfo", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(DataUnavailable) as err:
        load_dataset(DataSpec(dataset=dataset))
    msg = str(err.value)
    assert wanted.format(d=keras_home / "datasets") in msg
    assert "JOBCTL_OFFLINE" in msg and "https://" in msg  # why, and where the files come from


def test_a_data_path_that_does_not_exist_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    with pytest.raises(DataUnavailable, match=r"data.path: '.*nope' is not a folder.*mnist.npz"):
        load_dataset(DataSpec(dataset="mnist", path=str(tmp_path / "nope")))


def test_negative_labels_in_a_keras_file_are_refused(keras_home):
    """A one-hot of -1 is all zeros: such an image would be trained toward no class at all."""
    path = keras_home / "datasets" / "mnist.npz"
    arrays = write_mnist(path, n_train=20)
    arrays["y_train"] = arrays["y_train"].astype(np.int64)
    arrays["y_train"][3] = -1
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"'mnist' train labels must be class indices >= 0; received -1 at index 3"):
        load_dataset(_no_split(dataset="mnist"))
