"""augmentation.placement: device trains with the transform inside the train step, and exports exactly the model
the host placement exports: same signature, same variables, same ops (the transform is not in it)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.spec import apply_overrides, parse_spec

pytestmark = pytest.mark.slow

AUGMENTED = {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1, "contrast": 0.1}


def spec_for(placement: str):
    return parse_spec(apply_overrides({
        "name": "aug", "seed": 3,
        "data": {"dataset": "digits", "max_train_examples": 256},
        "model": {"type": "cnn", "conv_filters": [4], "padding": "same", "dense_units": [8], "dropout": 0.2},
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01},
        "augmentation": AUGMENTED,
        "callbacks": {"tensorboard": {"enabled": False}},
        "export": {"warmup_requests": 0},
    }, {"augmentation.placement": placement}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from jobs.training.loop import run

    return {p: run(spec_for(p), artifacts_dir=str(tmp_path_factory.mktemp(p)), run_id="r") for p in ("host", "device")}


def _graph(export_path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(export_path))
    fn = loaded.signatures["serving_default"]
    graph = fn.graph.as_graph_def()
    ops = sorted([n.op for n in graph.node] + [n.op for f in graph.library.function for n in f.node_def])
    variables = sorted((v.name, tuple(v.shape), v.dtype.name) for v in fn.variables)
    signature = (str(fn.structured_input_signature), sorted((k, str(v)) for k, v in fn.structured_outputs.items()))
    return signature, variables, ops


@pytest.mark.parametrize("placement", ["host", "device"])
def test_both_placements_train(trained, placement):
    import json

    result = trained[placement]
    history = json.loads((result.run_dir / "history.json").read_text())
    assert result.metrics["epochs_run"] == 3 and np.isfinite(result.metrics["test_loss"])
    assert history["loss"][-1] < history["loss"][0]  # the training loss went down


def test_the_exported_serving_graph_is_the_same_and_holds_no_augmentation(trained):
    host, device = (_graph(trained[p].export_path) for p in ("host", "device"))
    assert device[0] == host[0]  # signature: input name, dtype, shape; outputs
    assert device[1] == host[1] and len(host[1]) >= 4  # variables: names, shapes, dtypes (kernels and biases)
    assert device[2] == host[2]  # every op of the serving function and the functions it calls
    assert not any("ImageProjectiveTransform" in op or "RandomUniform" in op for op in device[2])


def test_device_placement_moves_the_transform_out_of_the_input_pipeline():
    """The host map no longer augments (the batches are the stored pixels); the train step does."""
    import keras

    from jobs.pipeline import make_dataset
    from jobs.training.device_augmentation import device_augmented, served

    x = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8, 1), dtype=np.uint8)
    spec = spec_for("device")
    (images, _), = make_dataset(x, np.zeros(8), 2, 8, training=True, seed=3, augmentation=spec.augmentation,
                                from_epoch=None).take(1)
    assert sorted(np.rint(images.numpy()).astype(int).ravel()) == sorted(x.astype(int).ravel())  # no transform

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    trainer = device_augmented(keras, model, spec.augmentation, 3, (8, 8, 1))
    seen = []
    trainer.served_model = model
    trainer.compile(optimizer="sgd", loss="categorical_crossentropy", run_eagerly=True)
    original = model.call

    def spy(inputs, *args, **kwargs):
        seen.append(np.asarray(inputs))
        return original(inputs, *args, **kwargs)

    model.call = spy
    trainer.fit(images[None].numpy()[0], np.eye(2)[np.zeros(8, int)], epochs=1, batch_size=8, verbose=0)
    assert served(trainer) is model and len(trainer.weights) == len(model.weights)
    assert seen and not np.allclose(seen[-1], images.numpy())  # the train step saw transformed images
