"""image_folder: class sub-folders of JPEG/PNG/GIF files in any colour mode, bad files skipped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.datasets import DEFAULT_IMAGE_FOLDER_SIZE, DataUnavailable, load_dataset
from jobs.spec import DataSpec

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(path: Path, mode: str, colour, size=(40, 30), fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt, **save)
    return path


def spec(root: Path, **kw) -> DataSpec:
    kw.setdefault("validation", {"use_test": True})
    return DataSpec(dataset="image_folder", path=str(root), **kw)


def by_label(data, label: int) -> np.ndarray:
    return np.concatenate([data.x_train[data.y_train == label], data.x_test[data.y_test == label]])


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Stanford Dogs layout: root/<class>/<image>, classes with every kind of file a scraped folder holds."""
    root = tmp_path / "dogs"
    for i in range(4):
        solid(root / "n02-beagle" / f"b{i}.jpg", "RGB", RED, quality=95)  # colour JPEG
        solid(root / "n01-akita" / f"a{i}.png", "L", 100)  # grey PNG
        solid(root / "n03-corgi" / f"c{i}.png", "RGBA", (0, 0, 255, 128))  # alpha is dropped, colour kept
    solid(root / "n03-corgi" / "pal.gif", "P", 0)  # palette index 0 of PIL's default palette
    solid(root / "n01-akita" / "nested" / "deep.png", "L", 100)  # sub-folders of a class are walked
    (root / "n02-beagle" / "notes.txt").write_text("not an image")
    (root / "n02-beagle" / "empty.jpg").write_bytes(b"")
    good = (root / "n02-beagle" / "b0.jpg").read_bytes()
    (root / "n02-beagle" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "n01-akita" / ".DS_Store").write_bytes(b"\x00\x01junk")  # hidden: ignored silently
    return root


def test_mixed_folder_classes_labels_colours_and_skips(mixed_folder, caplog):
    with caplog.at_level(logging.INFO, logger="jobs.datasets"):
        data = load_dataset(spec(mixed_folder))

    assert data.class_names == ["n01-akita", "n02-beagle", "n03-corgi"]  # sorted folder names = label order
    assert data.input_shape == (*DEFAULT_IMAGE_FOLDER_SIZE, 3)  # mixed grey and colour under 'keep' -> RGB
    assert len(data.x_train) + len(data.x_test) == 5 + 4 + 5
    akita, beagle, corgi = by_label(data, 0), by_label(data, 1), by_label(data, 2)
    assert len(akita) == 5 and len(beagle) == 4 and len(corgi) == 5
    assert np.all(akita == 100)  # grey replicated into R, G and B
    assert np.abs(beagle.astype(int) - RED).max() <= 3  # JPEG is lossy, but red stays red
    # Four half-transparent blue PNGs stay blue (alpha dropped, not blended), the palette GIF is black.
    assert sum(bool(np.all(img == BLUE)) for img in corgi) == 4
    assert sum(bool(np.all(img == 0)) for img in corgi) == 1

    skipped = [n for n in data.notes if n.startswith("skipped 3 unreadable files")]
    assert skipped, data.notes
    for name in ("notes.txt", "empty.jpg", "truncated.jpg"):
        assert name in skipped[0]
    assert ".DS_Store" not in skipped[0]
    assert any("skipped 3 unreadable files" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert any("data.resize is not set" in r.getMessage() for r in caplog.records)
    assert any("data.resize is not set" in n for n in data.notes)


def test_grayscale_mode_palette_and_resize(tmp_path):
    root = tmp_path / "root"
    for i in range(3):
        solid(root / "a" / f"{i}.png", "RGB", (200, 100, 50), size=(50, 20))
        solid(root / "b" / f"{i}.gif", "P", 0, size=(7, 9))
    data = load_dataset(spec(root, color_mode="grayscale", resize=(16, 24)))
    assert data.input_shape == (16, 24, 1)
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # ITU-R 601 as PIL and our array path use
    assert np.all(np.abs(by_label(data, 0).astype(int) - luma) <= 1)
    assert np.all(by_label(data, 1) == 0)  # palette index 0 of PIL's default palette is black


def test_all_grey_folder_keeps_one_channel_and_rgb_mode_forces_three(tmp_path):
    root = tmp_path / "root"
    for i in range(3):
        solid(root / "x" / f"{i}.png", "L", 10)
        solid(root / "y" / f"{i}.jpg", "L", 250)
    assert load_dataset(spec(root, resize=(8, 8))).input_shape == (8, 8, 1)
    assert load_dataset(spec(root, resize=(8, 8), color_mode="rgb")).input_shape == (8, 8, 3)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "root"
    for c, value in (("dark", 2570), ("bright", 65535)):
        for i in range(2):
            path = root / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((6, 6), value, dtype=np.uint16)).save(path)
    data = load_dataset(spec(root, resize=(6, 6)))
    assert np.all(by_label(data, data.class_names.index("dark")) == 10)  # 2570 / 257
    assert np.all(by_label(data, data.class_names.index("bright")) == 255)


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    root = tmp_path / "root"
    for c, colour in (("cat", RED), ("dog", GREEN)):
        for i in range(3):
            solid(root / "train" / c / f"{i}.png", "RGB", colour)
        solid(root / "test" / c / "t.png", "RGB", colour)
    data = load_dataset(spec(root, resize=(4, 4)))
    assert data.class_names == ["cat", "dog"]
    assert len(data.x_train) == 6 and len(data.x_test) == 2
    assert sorted(data.y_test.tolist()) == [0, 1]
    assert np.all(data.x_test[data.y_test == 1] == GREEN)

    solid(root / "test" / "fox" / "f.png", "RGB", BLUE)
    with pytest.raises(ValueError, match=r"data.path: .*test' has class folders \['fox'\] that .*train' lacks"):
        load_dataset(spec(root, resize=(4, 4)))


def test_a_test_folder_without_a_train_folder_is_an_error_not_a_class(tmp_path):
    root = tmp_path / "root"
    for c in ("cat", "dog"):
        solid(root / c / "x.png", "L", 1)
        solid(root / "test" / c / "t.png", "L", 2)
    with pytest.raises(
        ValueError,
        match=r"^data.path: '.*root' has a test/ sub-folder but no train/; expected both train/ and test/ .* or "
        r"neither \(root/<class>/<image>\)",
    ):
        load_dataset(spec(root, resize=(2, 2)))


def test_held_out_test_set_is_stratified_seeded_and_validation_mixes_classes(tmp_path):
    root = tmp_path / "root"
    for c in range(3):
        for i in range(10):
            solid(root / f"class{c}" / f"{i}.png", "L", c * 50 + i)  # every image distinct
    s = DataSpec(dataset="image_folder", path=str(root), resize=(4, 4), test_fraction=0.2, split_seed=1)
    a, b = load_dataset(s), load_dataset(s)
    assert np.bincount(a.y_test).tolist() == [2, 2, 2]  # 20% of each class
    # The split follows data.split_seed alone (load_dataset takes no training seed): sweep trials and ensemble
    # members, whatever their seeds, share a test set.
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    other = load_dataset(s.model_copy(update={"split_seed": 2}))
    assert not np.array_equal(a.x_test, other.x_test)
    # The validation split is the last 20% of the training files (Keras semantics), which are shuffled with the
    # seed: it must not be "the last class".
    assert len(set(a.y_val.tolist())) >= 2
    # No image is in two splits.
    seen = [tuple(img.reshape(-1)[:1]) for img in np.concatenate([a.x_train, a.x_val, a.x_test])]
    assert len(seen) == len(set(seen)) == 30


def test_class_names_fix_the_label_order_and_must_match_the_folders(tmp_path):
    root = tmp_path / "root"
    for c in ("a", "b", "c"):
        for i in range(2):
            solid(root / c / f"{i}.png", "L", ord(c))
    data = load_dataset(spec(root, resize=(2, 2), class_names=["c", "a", "b"]))
    assert data.class_names == ["c", "a", "b"]
    assert np.all(by_label(data, 0) == ord("c"))
    with pytest.raises(ValueError, match=r"data.class_names: .*no folder for \['z'\], folders not listed \['c'\]"):
        load_dataset(spec(root, resize=(2, 2), class_names=["a", "b", "z"]))


def test_errors_name_data_path(tmp_path):
    with pytest.raises(DataUnavailable, match=r"data.path: folder '.*missing' does not exist; expected a folder"):
        load_dataset(spec(tmp_path / "missing"))
    solid(tmp_path / "one" / "only" / "x.png", "L", 1)
    with pytest.raises(ValueError, match=r"data.path: .* has 1 class sub-folder \['only'\]"):
        load_dataset(spec(tmp_path / "one"))
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "b").mkdir()
    (tmp_path / "bad" / "a" / "x.png").write_text("nope")
    with pytest.raises(ValueError, match=r"data.path: no readable images under"):
        load_dataset(spec(tmp_path / "bad"))


def test_an_empty_test_folder_is_an_error_not_a_nan_metric(tmp_path):
    root = tmp_path / "root"
    for c in ("a", "b"):
        solid(root / "train" / c / "x.png", "L", 1)
        (root / "test" / c).mkdir(parents=True)
    (root / "test" / "a" / "readme.txt").write_text("later")
    with pytest.raises(ValueError, match=r"data.path: no readable images under '.*test'"):
        load_dataset(spec(root, resize=(2, 2)))
