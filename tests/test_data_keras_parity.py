"""Keras' own loaders read the fixture files exactly as jobs.datasets does.

This proves the fixtures of tests/test_data_keras.py are in the real on-disk formats (and that our cache paths are
the ones Keras 3 uses), so those tests are not just our reader agreeing with our writer. Importing Keras costs a
few seconds; these are the only data tests that pay it.
"""

from __future__ import annotations

import numpy as np
import pytest

from jobs.datasets import load_dataset
from jobs.spec import DataSpec
from tests.support.keras_files import write_cifar10, write_cifar100, write_fashion_mnist, write_mnist

keras = pytest.importorskip("keras")


def test_keras_fashion_mnist_loader_reads_our_cache_like_we_do(tmp_path, monkeypatch):
    from keras.src.backend import config

    written = write_fashion_mnist(tmp_path / "datasets" / "fashion-mnist", n_train=7, n_test=3)
    # Keras reads KERAS_HOME once at import; get_file asks config.keras_home() on every call.
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")

    def no_download(*a, **k):
        raise AssertionError("Keras tried to download: the cache path differs from what it expects")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", no_download)
    (kx, ky), (kxt, kyt) = keras.datasets.fashion_mnist.load_data()
    ours = load_dataset(DataSpec(dataset="fashion_mnist", validation={"use_test": True}))
    np.testing.assert_array_equal(ours.x_train[..., 0], kx)
    np.testing.assert_array_equal(ours.y_train, ky)
    np.testing.assert_array_equal(ours.x_test[..., 0], kxt)
    np.testing.assert_array_equal(ours.y_test, kyt)
    np.testing.assert_array_equal(kx, written["train"][0])


def test_keras_cifar_batch_reader_agrees_on_pixels_labels_and_channel_order(tmp_path, monkeypatch):
    from keras.src.datasets.cifar import load_batch

    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    folder = tmp_path / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    write_cifar10(folder, per_batch=3, seed=5)
    ours = load_dataset(DataSpec(dataset="cifar10", path=str(tmp_path), validation={"use_test": True}))
    # keras.datasets.cifar10.load_data: load_batch -> [N, 3, 32, 32], then transpose(0, 2, 3, 1) for channels_last.
    kx, ky = load_batch(str(folder / "data_batch_2"))
    np.testing.assert_array_equal(ours.x_train[3:6], kx.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ours.y_train[3:6], ky)

    folder100 = tmp_path / "cifar-100-python-target" / "cifar-100-python"
    write_cifar100(folder100, n=4, seed=6)
    coarse = load_dataset(
        DataSpec(dataset="cifar100", path=str(tmp_path), cifar100_label_mode="coarse", validation={"use_test": True})
    )
    kx, ky = load_batch(str(folder100 / "test"), label_key="coarse_labels")
    np.testing.assert_array_equal(coarse.x_test, kx.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(coarse.y_test, ky)


def test_keras_mnist_loader_reads_the_same_cache_file(tmp_path, monkeypatch):
    from keras.src.backend import config
    from keras.src.utils import file_utils

    written = write_mnist(tmp_path / "datasets" / "mnist.npz", n_train=6, n_test=3)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    # Keras checks the real file's sha256 before using a cached mnist.npz; ours is a small stand-in.
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    monkeypatch.setattr(file_utils, "urlretrieve", lambda *a, **k: pytest.fail("Keras tried to download"))
    (kx, ky), (kxt, kyt) = keras.datasets.mnist.load_data()
    ours = load_dataset(DataSpec(dataset="mnist", validation={"use_test": True}))
    np.testing.assert_array_equal(ours.x_train[..., 0], kx)
    np.testing.assert_array_equal(ours.y_test, kyt)
    np.testing.assert_array_equal(kxt, written["x_test"])


def _keras_cache_with_archive(tmp_path, monkeypatch, folder_name: str, archive_name: str, writer):
    """A Keras home whose datasets/ holds only the downloaded archive, as Keras 3 names it; hashes not checked."""
    import tarfile

    from keras.src.backend import config
    from keras.src.utils import file_utils

    staging = tmp_path / "staging" / folder_name
    written = writer(staging)
    datasets = tmp_path / "home" / "datasets"
    datasets.mkdir(parents=True)
    with tarfile.open(datasets / archive_name, "w:gz") as tf:
        tf.add(staging, arcname=folder_name)
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    monkeypatch.setattr(file_utils, "validate_file", lambda *a, **k: True)
    monkeypatch.setattr(file_utils, "urlretrieve", lambda *a, **k: pytest.fail("Keras tried to download"))
    return written, datasets


def test_keras_cifar100_load_data_and_ours_agree_from_archive_and_after_extraction(tmp_path, monkeypatch):
    _, datasets = _keras_cache_with_archive(
        tmp_path, monkeypatch, "cifar-100-python", "cifar-100-python-target_archive",
        lambda d: write_cifar100(d, n=5, seed=8),
    )
    spec = DataSpec(dataset="cifar100", cifar100_label_mode="coarse", validation={"use_test": True})
    from_archive = load_dataset(spec)  # only the archive is there yet
    (kx, ky), (kxt, kyt) = keras.datasets.cifar100.load_data(label_mode="coarse")  # extracts it, Keras 3 style
    assert (datasets / "cifar-100-python-target" / "cifar-100-python" / "train").is_file()
    extracted = load_dataset(spec)
    for ours in (from_archive, extracted):
        np.testing.assert_array_equal(ours.x_train, kx)
        np.testing.assert_array_equal(ours.y_train, ky.reshape(-1))
        np.testing.assert_array_equal(ours.x_test, kxt)
        np.testing.assert_array_equal(ours.y_test, kyt.reshape(-1))


def test_keras_cifar10_load_data_reads_the_batches_where_we_do(tmp_path, monkeypatch):
    import keras.src.datasets.cifar10 as kcifar10

    _, datasets = _keras_cache_with_archive(
        tmp_path, monkeypatch, "cifar-10-batches-py", "cifar-10-batches-py-target_archive",
        lambda d: write_cifar10(d, per_batch=2, seed=9),
    )
    real_load_batch = kcifar10.load_batch
    read_by_keras = []

    def load_batch(fpath, label_key="labels"):
        # Keras' loader assumes 10,000 images per batch; pad our 2-image batches so its slicing works.
        read_by_keras.append(fpath)
        data, labels = real_load_batch(fpath, label_key)
        if not fpath.endswith("test_batch"):
            data = np.concatenate([data, np.zeros((10000 - len(data), 3, 32, 32), np.uint8)])
            labels = list(labels) + [0] * (10000 - len(labels))
        return data, labels

    monkeypatch.setattr(kcifar10, "load_batch", load_batch)
    (kx, ky), (kxt, kyt) = keras.datasets.cifar10.load_data()
    ours = load_dataset(DataSpec(dataset="cifar10", validation={"use_test": True}))
    folder = datasets / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    assert read_by_keras == [str(folder / f"data_batch_{i}") for i in range(1, 6)] + [str(folder / "test_batch")]
    for i in range(5):
        np.testing.assert_array_equal(ours.x_train[2 * i: 2 * i + 2], kx[10000 * i: 10000 * i + 2])
        np.testing.assert_array_equal(ours.y_train[2 * i: 2 * i + 2], ky[10000 * i: 10000 * i + 2, 0])
    np.testing.assert_array_equal(ours.x_test, kxt)
    np.testing.assert_array_equal(ours.y_test, kyt.reshape(-1))
