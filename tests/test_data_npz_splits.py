"""npz files and the split semantics every loader shares (validation fraction / train_size / use_test, test hold-out)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.datasets import DataUnavailable, load_dataset
from jobs.spec import DataSpec


def npz_spec(path, **kw) -> DataSpec:
    return DataSpec(dataset="npz", path=str(path), **kw)


def images(n: int, shape=(5, 6), start: int = 0) -> np.ndarray:
    """Image i is filled with the value start+i, so every split can be traced back to source indices."""
    return (np.arange(start, start + n, dtype=np.uint8)[:, None, None] * np.ones(shape, np.uint8)).astype(np.uint8)


def test_npz_with_test_split_and_class_names(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(10), y_train=np.arange(10) % 3, x_test=images(4, start=100), y_test=[0, 1, 2, 0],
             class_names=np.array(["ant", "bee", "cow"]))
    data = load_dataset(npz_spec(f, validation={"fraction": 0.2}))
    assert data.class_names == ["ant", "bee", "cow"]
    assert data.input_shape == (5, 6, 1) and data.pixel_max == 255.0
    # validation = the last 20% of the file's training examples, order kept (Keras validation_split).
    assert data.x_train[:, 0, 0, 0].tolist() == list(range(8))
    assert data.x_val[:, 0, 0, 0].tolist() == [8, 9] and data.y_val.tolist() == [2, 0]
    assert data.x_test[:, 0, 0, 0].tolist() == [100, 101, 102, 103]


def test_npz_without_test_holds_out_a_stratified_seeded_share(tmp_path):
    f = tmp_path / "d.npz"
    y = np.repeat([0, 1], 10)
    np.savez(f, x_train=images(20), y_train=y)
    data = load_dataset(npz_spec(f, test_fraction=0.3, validation={"fraction": 0.25}))
    assert np.bincount(data.y_test).tolist() == [3, 3]
    rest = data.x_train[:, 0, 0, 0].tolist() + data.x_val[:, 0, 0, 0].tolist()
    assert rest == sorted(rest)  # the training examples keep the file's order
    assert sorted(rest + data.x_test[:, 0, 0, 0].tolist()) == list(range(20))
    assert data.class_names == ["0", "1"]
    assert any("held out 6 examples" in n for n in data.notes)


def test_npz_float_pixels_one_hot_labels_and_rgb(tmp_path):
    f = tmp_path / "d.npz"
    x = np.zeros((4, 3, 3, 3), np.float32)
    x[0, 1, 2] = (1.0, 0.5, 0.0)
    np.savez(f, x_train=x, y_train=np.eye(2)[[0, 1, 1, 0]], x_test=x[:2], y_test=[[0], [1]])
    data = load_dataset(npz_spec(f, validation={"use_test": True}))
    assert data.x_train.dtype == np.uint8 and tuple(data.x_train[0, 1, 2]) == (255, 128, 0)
    assert data.y_train.tolist() == [0, 1, 1, 0] and data.y_test.tolist() == [0, 1]
    assert any("scaled to 0..255" in n for n in data.notes) and any("one-hot" in n for n in data.notes)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": images(3), "y": [0, 1, 0]}, r"has no array 'x_train'; found keys \['x', 'y'\]; expected x_train, y_train"),
        ({"x_train": images(3), "y_train": [0, 1, 0], "x_test": images(2)}, r"has 'x_test' but no 'y_test'"),
        ({"x_train": images(3), "y_train": [0, 1]}, r"has 3 images but 2 labels in 'y_train'"),
        ({"x_train": np.zeros((3, 12)), "y_train": [0, 1, 0]}, r"'x_train' has shape \[3, 12\]; expected \[N, height, width\]"),
        ({"x_train": images(3).astype(np.int32) * 300, "y_train": [0, 1, 0]}, r"'x_train' has values in \[0, 600\]; expected uint8"),
        ({"x_train": images(3), "y_train": [0, 1, 5], "class_names": np.array(["a", "b"])}, r"has labels up to 5 but class_names lists 2"),
        ({"x_train": images(3), "y_train": [0.5, 1, 0]}, r"'y_train' has dtype float64; expected integer class indices"),
    ],
)
def test_npz_errors_name_the_field_the_file_and_what_is_expected(tmp_path, arrays, message):
    f = tmp_path / "d.npz"
    np.savez(f, **arrays)
    with pytest.raises(ValueError, match=r"^data\.path: '.*d\.npz' (array )?" + message):
        load_dataset(npz_spec(f))


def test_npz_object_arrays_are_refused_with_the_fix(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(4), y_train=[0, 1, 0, 1], class_names=np.array(["a", "b"], dtype=object))
    with pytest.raises(ValueError, match=r"'class_names' is an object array.*np.array\(names, dtype=str\)"):
        load_dataset(npz_spec(f))


def test_npz_missing_or_not_npz(tmp_path):
    with pytest.raises(DataUnavailable, match=r"data.path: '.*gone.npz' does not exist; expected an .npz"):
        load_dataset(npz_spec(tmp_path / "gone.npz"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"data.path: '.*text.npz' is not a NumPy .npz archive; expected x_train"):
        load_dataset(npz_spec(tmp_path / "text.npz"))


def test_npz_that_is_not_an_archive_never_suggests_loading_it_unsafely(tmp_path):
    (tmp_path / "x.npz").write_text("x_train,y_train\n1,0\n")  # numpy would try it as a pickle
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "one.npy", images(3))
    for name in ("x.npz", "empty.npz"):
        with pytest.raises(ValueError, match=rf"^data.path: '.*{name}' is not a NumPy .npz archive; expected") as err:
            load_dataset(npz_spec(tmp_path / name))
        assert "pickle" not in str(err.value) and "numpy.savez(" in str(err.value)
    with pytest.raises(ValueError, match=r"'.*one.npy' holds a single array, not an .npz archive"):
        load_dataset(npz_spec(tmp_path / "one.npy"))


def test_npz_test_labels_must_be_training_classes(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(9), y_train=np.arange(9) % 3, x_test=images(4), y_test=[0, 7, 2, 5])
    with pytest.raises(
        ValueError,
        match=r"^data.path: '.*d.npz' array 'y_test' has labels \[5, 7\] that 'y_train' lacks; expected the test "
        "classes to be among the training classes",
    ):
        load_dataset(npz_spec(f))
    np.savez(f, x_train=images(9), y_train=np.arange(9) % 3, x_test=images(2), y_test=[2, 0])  # a subset is fine
    assert load_dataset(npz_spec(f)).num_classes == 3


def test_npz_needs_at_least_two_training_classes(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(6), y_train=np.full(6, 4), x_test=images(2), y_test=[4, 4])
    with pytest.raises(
        ValueError, match=r"^data.path: '.*d.npz' array 'y_train' has only label 4; expected at least 2 classes"
    ):
        load_dataset(npz_spec(f))
    np.savez(f, x_train=images(6), y_train=np.eye(3)[[1] * 6])  # one-hot, but still one class
    with pytest.raises(ValueError, match=r"'y_train' has only label 1; expected at least 2 classes"):
        load_dataset(npz_spec(f))


@pytest.mark.parametrize(
    "y_train, shown",
    [
        ([[1, 0, 0], [0.8, 0.1, 0.1], [0, 1, 0]], r"row 1 is \[0.8, 0.1, 0.1\]"),  # soft labels
        ([[1, 0, 0], [0, 1, 0], [0, 0, 0]], r"row 2 is \[0, 0, 0\]"),  # no class
        ([[1, 1, 0], [0, 1, 0], [0, 0, 1]], r"row 0 is \[1, 1, 0\]"),  # two classes
        (np.eye(12)[[0, 1, 2]] * 2, r"row 0 has nonzero values \{0: 2.0\} \(column: value\)"),  # long rows: the nonzeros
    ],
    ids=["soft", "all-zero", "two-ones", "long-row"],
)
def test_npz_label_rows_must_be_exactly_one_hot(tmp_path, y_train, shown):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(3), y_train=np.asarray(y_train))
    with pytest.raises(
        ValueError,
        match=r"^data.path: '.*d.npz' array 'y_train' has shape \[3, \d+\] but " + shown + "; expected one-hot rows "
        r"\(a single 1, zeros elsewhere\) or \[N\] integer class indices",
    ):
        load_dataset(npz_spec(f))


def test_validation_train_size_use_test_and_max_train_examples(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(10), y_train=np.arange(10) % 2, x_test=images(3, start=50), y_test=[0, 1, 0])
    first = load_dataset(npz_spec(f, validation={"train_size": 7}))  # seed 004: first 40k / last 10k
    assert first.x_train[:, 0, 0, 0].tolist() == list(range(7)) and first.x_val[:, 0, 0, 0].tolist() == [7, 8, 9]
    on_test = load_dataset(npz_spec(f, validation={"use_test": True}, max_train_examples=4))
    assert len(on_test.x_train) == 4 and on_test.x_val[:, 0, 0, 0].tolist() == [50, 51, 52]
    shuffled = load_dataset(npz_spec(f, validation={"fraction": 0.3, "shuffle": True}))
    assert sorted(shuffled.x_train[:, 0, 0, 0].tolist() + shuffled.x_val[:, 0, 0, 0].tolist()) == list(range(10))
    assert shuffled.x_val[:, 0, 0, 0].tolist() != [7, 8, 9]
    with pytest.raises(ValueError, match=r"data.validation.train_size=10 leaves no validation data"):
        load_dataset(npz_spec(f, validation={"train_size": 10}))
    with pytest.raises(ValueError, match=r"data.validation.fraction=0.01 of 10 training examples leaves 10 for training and 0"):
        load_dataset(npz_spec(f, validation={"fraction": 0.01}))
    one_each = tmp_path / "tiny.npz"
    np.savez(one_each, x_train=images(2), y_train=[0, 1])  # one example per class: nothing can be held out
    with pytest.raises(ValueError, match=r"data.test_fraction=0.2: dataset 'npz' ends with no test examples"):
        load_dataset(npz_spec(one_each))


def test_digits_is_offline_same_as_sklearn_and_split_like_before():
    from jobs.datasets.digits import digits_arrays

    # What sklearn.datasets.load_digits() returns (checked once by hand; importing scikit-learn here costs ~2 s).
    images, target = digits_arrays()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    assert np.bincount(target.astype(int)).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert target[:5].tolist() == [0, 1, 2, 3, 4]
    assert images[0].astype(int).tolist() == [
        [0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
        [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0],
    ]

    data = load_dataset(DataSpec())
    assert data.pixel_max == 16.0 and data.input_shape == (8, 8, 1)
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    assert len(data.x_test) == 359 and data.num_classes == 10
    again = load_dataset(DataSpec())  # the split is seeded (data.split_seed): the same images every time
    np.testing.assert_array_equal(data.x_val, again.x_val)
    np.testing.assert_array_equal(data.x_test, again.x_test)


def test_python_m_jobs_data_describes_the_data_and_uses_the_exit_codes(tmp_path, capsys, monkeypatch):
    from jobs.datasets.describe import main

    monkeypatch.setenv("JOBCTL_OFFLINE", "1")
    f = tmp_path / "d.npz"
    np.savez(f, x_train=images(10), y_train=np.arange(10) % 2)
    (tmp_path / "ok.yaml").write_text(f"name: t\ndata: {{dataset: npz, path: {f}}}\n")
    assert main(["--spec", str(tmp_path / "ok.yaml")]) == 0
    out = capsys.readouterr().out
    assert "npz: train 6, validation 2, test 2; input [5, 6, 1] uint8" in out and "note: no x_test/y_test" in out

    (tmp_path / "gone.yaml").write_text(f"name: t\ndata: {{dataset: mnist, path: {tmp_path}}}\n")
    assert main(["--spec", str(tmp_path / "gone.yaml")]) == 3
    assert "mnist.npz in" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text(f"name: t\ndata: {{dataset: npz, path: {tmp_path / 'ok.yaml'}}}\n")
    assert main(["--spec", str(tmp_path / "bad.yaml")]) == 2


@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=60),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60, deadline=None)
def test_stratified_holdout_partitions_every_class(labels, fraction, seed):
    from jobs.datasets.base import stratified_holdout

    y = np.array(labels)
    train, test = stratified_holdout(y, fraction, np.random.default_rng(seed))
    assert sorted(train.tolist() + test.tolist()) == list(range(len(y)))  # a partition: nothing lost or doubled
    assert train.tolist() == sorted(train.tolist())  # the source order is kept
    for c in np.unique(y):
        n = int((y == c).sum())
        k = int((y[test] == c).sum())
        if n >= 2:
            assert 1 <= k <= n - 1  # both sides see every class that can be split
            assert abs(k - n * fraction) <= 0.5 + 1e-9 or k in (1, n - 1)  # rounded, unless clamped
        else:
            assert k == 0  # a lone example stays in training
