"""Input pipeline, optimizers and learning-rate schedules, mixed precision: the knobs the seeds turn."""

import numpy as np
import pytest

from jobs.spec import parse_spec


def spec_with(**training):
    return parse_spec({"name": "p", "training": training})


def test_pipeline_batches_one_hot_and_augments_training_only():
    from jobs.pipeline import make_dataset
    from jobs.spec import AugmentationSpec

    x = np.tile(np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1), (10, 1, 1, 1))
    y = np.arange(10) % 3
    aug = AugmentationSpec(flip="horizontal_and_vertical", translation=0.2)
    train = list(make_dataset(x, y, 3, 4, training=True, seed=1, augmentation=aug))
    val = list(make_dataset(x, y, 3, 4, training=False, seed=1, augmentation=aug))
    assert [b[0].shape[0] for b in train] == [4, 4, 2]
    assert train[0][0].dtype.name == "float32" and train[0][1].shape == (4, 3)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in val]), np.eye(3)[y])
    val_images = np.concatenate([b[0].numpy() for b in val])
    np.testing.assert_array_equal(val_images, x.astype("float32"))  # validation is never augmented
    train_images = np.concatenate([b[0].numpy() for b in train])
    assert not np.array_equal(np.sort(train_images, axis=None), np.sort(x.astype("float32"), axis=None))


def test_repeat_for_fit_makes_each_epoch_one_whole_reshuffled_pass():
    """The engine feeds fit one repeated dataset with steps per epoch: every epoch must still see each example
    exactly once (partial last batch included) and in a new order."""
    from jobs.pipeline import make_dataset, repeat_for_fit

    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    ds, steps = repeat_for_fit(make_dataset(x, np.zeros(10), 2, 4, training=True, seed=1), len(x), 4)
    assert steps == 3
    batches = [b[0].numpy().reshape(-1) for b in ds.take(3 * steps)]
    assert [len(b) for b in batches] == [4, 4, 2] * 3
    epochs = [np.concatenate(batches[i * steps:(i + 1) * steps]) for i in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(10))
    assert len({tuple(order.tolist()) for order in epochs}) > 1


def test_flip_only_gives_each_image_or_its_mirror_exactly():
    from jobs.pipeline import make_dataset
    from jobs.spec import AugmentationSpec

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 6, 5, 3), dtype=np.uint8)
    y = np.zeros(64)
    aug = AugmentationSpec(flip="horizontal")
    (images, _), = list(make_dataset(x, y, 2, 64, training=True, seed=3, augmentation=aug, shuffle_buffer=1))
    images = images.numpy()
    same = [np.array_equal(images[i], x[i]) for i in range(64)]
    mirrored = [np.array_equal(images[i], x[i][:, ::-1]) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # a fair coin per image


def test_zero_ranges_are_the_identity_and_rotation_keeps_the_centre():
    import tensorflow as tf

    from jobs.pipeline import _random_affine
    from jobs.spec import AugmentationSpec

    x = tf.constant(np.random.default_rng(1).uniform(0, 255, (4, 7, 7, 1)), tf.float32)
    np.testing.assert_allclose(_random_affine(x, AugmentationSpec(), seed=1).numpy(), x.numpy(), atol=1e-4)
    rotated = _random_affine(x, AugmentationSpec(rotation=0.25, zoom=0.2), seed=1).numpy()
    np.testing.assert_allclose(rotated[:, 3, 3], x.numpy()[:, 3, 3], atol=1e-3)  # rotation/zoom about the centre
    assert not np.allclose(rotated, x.numpy())


def test_each_fresh_iterator_gets_a_new_order():
    """tf-keras multi-worker runs make a new iterator every epoch (no repeat): each must still be reshuffled."""
    from jobs.pipeline import make_dataset

    x = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    ds = make_dataset(x, np.zeros(50), 2, 10, training=True, seed=3)
    first, second = (np.concatenate([b[0].numpy().ravel() for b in ds]) for _ in range(2))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(50))
    assert not np.array_equal(first, second)


def test_training_shuffle_is_seeded():
    from jobs.pipeline import make_dataset

    x = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    y = np.zeros(50)
    order = lambda seed: np.concatenate([b[0].numpy().ravel() for b in make_dataset(x, y, 2, 10, training=True, seed=seed)])
    assert np.array_equal(order(3), order(3)) and not np.array_equal(order(3), order(4))


def test_default_shuffle_spans_the_whole_training_set_a_buffer_is_a_window_and_1_keeps_the_order():
    """The seeds' fit(x, y, shuffle=True) permutes the whole array every epoch; so does jobctl by default. A
    tf.data buffer of N only mixes neighbours (the first batch comes from the first 2N examples)."""
    from jobs.pipeline import make_dataset

    n = 1000
    x = np.stack([np.arange(n) // 256, np.arange(n) % 256], axis=1).astype(np.uint8).reshape(n, 2, 1, 1)
    y = np.zeros(n)

    def batches(**kw):
        return [(b[0].numpy().reshape(-1, 2).astype(int) @ [256, 1]) for b in make_dataset(x, y, 2, 10, training=True, seed=5, **kw)]

    full = batches()
    assert sorted(np.concatenate(full).tolist()) == list(range(n))
    assert full[0].max() > n // 2 and full[0].min() < n // 2  # drawn from all over the set
    windowed = batches(shuffle_buffer=10)
    assert windowed[0].max() < 20 and sorted(np.concatenate(windowed).tolist()) == list(range(n))
    assert np.concatenate(batches(shuffle_buffer=1)).tolist() == list(range(n))
    assert [b[0].shape[0] for b in make_dataset(x[:25], y[:25], 2, 10, training=True, seed=5, drop_remainder=True)] == [10, 10]
    # The batch count is known up front (Keras reads it for a finite dataset), partial batch included or not.
    assert [len(make_dataset(x[:25], y[:25], 2, 10, training=True, seed=5, drop_remainder=d)) for d in (False, True)] == [3, 2]



def test_epoch_indexed_passes_start_anywhere_with_the_same_orders():
    """from_epoch=k: the passes of epochs k, k+1, ... with the orders an endless dataset from epoch 0 gives them;
    each pass a whole permutation, reshuffled between epochs. What lets a resumed run see the uninterrupted orders,
    for the full shuffle and for a windowed one alike."""
    from jobs.pipeline import make_dataset

    n, batch = 23, 5  # a partial last batch: 5 batches per epoch
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    for kw in ({}, {"shuffle_buffer": 4}):
        def epochs(first, count, **extra):
            ds = make_dataset(x, np.zeros(n), 2, batch, training=True, seed=3, from_epoch=first, **kw, **extra)
            flat = np.concatenate([b[0].numpy().ravel() for b in ds.take(5 * count)]).astype(int)
            return flat.reshape(count, n)

        from_zero = epochs(0, 4)
        assert all(sorted(e) == list(range(n)) for e in from_zero.tolist())
        assert not np.array_equal(from_zero[0], from_zero[1])
        np.testing.assert_array_equal(epochs(2, 2), from_zero[2:])
        np.testing.assert_array_equal(epochs(0, 4, deterministic=True), from_zero)  # seeded: the same every run


@pytest.mark.parametrize("global_seed", [0, 123])
def test_a_windowed_shuffle_resumed_by_epoch_ignores_the_global_seed(global_seed):
    """A spec with `seed: 0` sets TensorFlow's global seed to 0, under which tf.data's seed check used to evaluate the
    per-epoch seed tensor as a bool (tracing failed). Each epoch's windowed order depends on (seed, epoch) alone."""
    import tensorflow as tf

    from jobs.pipeline import make_dataset

    n = 12
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)

    def first_epochs():
        ds = make_dataset(x, np.zeros(n), 2, 4, training=True, seed=0, from_epoch=0, shuffle_buffer=4)
        return [int(v) for b in ds.take(6) for v in b[0].numpy().ravel()]

    tf.random.set_seed(global_seed)
    under_global = first_epochs()
    tf.random.set_seed(7)
    assert under_global == first_epochs()
    assert sorted(under_global[:n]) == list(range(n)) and sorted(under_global[n:]) == list(range(n))
