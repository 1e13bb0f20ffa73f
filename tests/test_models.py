"""Model builder: every model type from the spec, logits out, knobs honoured."""

import pytest

from jobs.spec import parse_spec


def build(model, pre=None, shape=(8, 8, 1), classes=10, pixel_max=16.0, x=None):
    from jobs.models import build_model

    spec = parse_spec({"name": "m", "model": model, "preprocessing": pre or {}})
    return build_model(spec.model, spec.preprocessing, shape, classes, pixel_max, x_adapt=x)


def layer_types(model):
    return [type(l).__name__ for l in model.layers]


def test_cnn_knobs():
    m = build({"type": "cnn", "conv_filters": [4, 8, 8], "kernel_size": [3, 3, 1], "padding": "same",
               "pool_after": [1], "batch_norm": True, "conv_dropout": 0.3, "dense_units": [16, 8], "dropout": 0.5,
               "activation": "tanh"})
    types = layer_types(m)
    assert types.count("Conv2D") == 3 and types.count("MaxPooling2D") == 1 and types.count("BatchNormalization") == 5
    assert types.count("Dropout") == 3 and types[-1] == "Dense" and m.output_shape == (None, 10)
    assert m.get_layer("conv0_tanh").activation.__name__ == "tanh"
    assert m.layers[-1].activation.__name__ == "linear"  # logits: softmax lives in the loss and the export


def test_seed000_conv_stack_without_pooling():
    m = build({"type": "cnn", "conv_filters": [8, 8, 8], "kernel_size": [7, 5, 3], "pooling": "none",
               "dense_units": [128]}, shape=(32, 32, 3), classes=3, pixel_max=255)
    assert m.get_layer("conv2").output.shape[1:] == (20, 20, 8)
    assert "MaxPooling2D" not in layer_types(m)


def test_separable_cnn_with_global_pooling():
    m = build({"type": "separable_cnn", "conv_filters": [8, 16], "global_pooling": "avg", "padding": "same"})
    assert "SeparableConv2D" in layer_types(m) and "GlobalAveragePooling2D" in layer_types(m)


def test_separable_stack_keeps_its_signal():
    """Seed 002's six separable layers: with Keras' default depthwise init the logits came out ~1e-6 (std) and
    training on digits never left ln 10; jobctl's depthwise init keeps activations at the input's order."""
    import keras
    import numpy as np

    from jobs.datasets import load_dataset
    from jobs.spec import DataSpec

    keras.utils.set_random_seed(0)
    m = build({"type": "separable_cnn", "conv_filters": [32, 64, 64, 128, 64, 128], "pool_after": [1, 3],
               "global_pooling": "avg", "dense_units": [32], "padding": "same"}, pre={"rescale": "auto"})
    x = load_dataset(DataSpec(dataset="digits")).x_train[:128].astype("float32")
    deepest = keras.Model(m.input, m.get_layer("conv5_relu").output)
    scaled_std = float(np.std(x / 16.0))
    assert float(np.std(np.asarray(deepest(x)))) > scaled_std / 100  # Keras' default: ~1e-5 of it


def test_mlp_and_rescale():
    import numpy as np

    m = build({"type": "mlp", "dense_units": [32]}, pre={"rescale": "auto"})
    assert layer_types(m)[:3] == ["InputLayer", "Rescaling", "Flatten"]
    assert m.get_layer("rescale").scale == pytest.approx(1 / 16)
    m = build({"type": "mlp"}, pre={"rescale": None, "standardize": True}, x=np.arange(128).reshape(2, 8, 8, 1) % 17)
    assert "Normalization" in layer_types(m) and "Rescaling" not in layer_types(m)


def test_transfer_base_upsamples_small_grey_inputs():
    m = build({"type": "transfer", "transfer": {"base": "mobilenet_v2", "weights": "none"}, "dense_units": [16]})
    assert m.get_layer("upsample").output.shape[1:3] == (32, 32)
    base = [l for l in m.layers if type(l).__name__ == "Functional"][0]
    assert not base.trainable and m.output_shape == (None, 10)


def test_transfer_missing_weights_file_is_a_clear_error(tmp_path):
    from jobs.models import WeightsUnavailable

    with pytest.raises(WeightsUnavailable, match=r"model.transfer.weights: file not found. Received: weights="):
        build({"type": "transfer", "transfer": {"base": "vgg16", "weights": str(tmp_path / "w.h5")}})
