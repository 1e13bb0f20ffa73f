"""Keras models built from `ModelSpec`.

Every model takes raw pixels (float32 cast of the uint8 images) and outputs **logits**: the softmax lives in the
loss (`from_logits=True`) and in the exported signature, so a missing softmax can never turn into seed 000's NaN
loss, and a double softmax can never flatten the probabilities. Rescaling and standardization are layers of the
model, so the exported graph needs nothing but raw pixels.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

import keras
import numpy as np
from keras import layers

from jobs.contract import INPUT_NAME
from jobs.errors import BadInputError, DataUnavailableError
from jobs.spec import ModelSpec, PreprocessingSpec, TransferSpec

log = logging.getLogger(__name__)

# Smallest input each application accepts; smaller images are upsampled inside the graph.
_MIN_SIDE = {"vgg16": 32, "mobilenet_v2": 32, "resnet50": 32, "efficientnet_b0": 32}
_APPLICATIONS = {
    "vgg16": ("VGG16", "vgg16"),
    "mobilenet_v2": ("MobileNetV2", "mobilenet_v2"),
    "resnet50": ("ResNet50", "resnet50"),
    "efficientnet_b0": ("EfficientNetB0", "efficientnet"),
}


# Keras' default 0.99 needs ~500 steps before the moving variance forgets its initial 1.0; on small datasets
# (digits: 36 steps an epoch) inference then sees 100x the real variance and scores at chance while training
# accuracy is 99% (measured). 0.9 (PyTorch's default) converges in ~50 steps and costs nothing on large data.
BN_MOMENTUM = 0.9


class WeightsUnavailable(DataUnavailableError):
    """ImageNet weights are not cached and cannot be downloaded: exit 3."""


@keras.saving.register_keras_serializable(package="jobctl")
class ApplicationPreprocess(layers.Layer):
    """The keras.applications `preprocess_input` of one base network, as a layer (inputs in 0..255)."""

    def __init__(self, base: str, **kwargs):
        super().__init__(**kwargs)
        self.base = base

    def call(self, inputs):
        module = getattr(keras.applications, _APPLICATIONS[self.base][1])
        return module.preprocess_input(inputs)

    def get_config(self):
        return {**super().get_config(), "base": self.base}


def _rescale_factor(pre: PreprocessingSpec, pixel_max: float) -> Optional[float]:
    if pre.rescale == "auto":
        return 1.0 / float(pixel_max)
    return pre.rescale  # a float, or None for no rescaling


def _depthwise_initializer(kernel) -> keras.initializers.Initializer:
    """He-uniform over a depthwise kernel's true fan-in: its kh*kw taps, one input channel each.

    Keras' default glorot_uniform counts every input channel in a depthwise kernel's fan-in, so each separable
    layer shrinks the signal's standard deviation 5-10x: after seed 002's six layers the logits are ~1e-6 and,
    on digits, the loss never left ln 10 (measured: tests/test_models.py keeps the signal alive). With the true
    fan-in and He's factor 2 for the ReLU, activations keep their scale through the stack.
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    limit = math.sqrt(6.0 / (kh * kw))
    return keras.initializers.RandomUniform(-limit, limit)


def _conv_body(x, spec: ModelSpec):
    conv = layers.SeparableConv2D if spec.type == "separable_cnn" else layers.Conv2D
    pool_at = set(range(len(spec.conv_filters))) if spec.pool_after is None else set(spec.pool_after)
    for i, (filters, kernel) in enumerate(zip(spec.conv_filters, spec.kernel_sizes())):
        # With batch norm the activation follows the normalization (and the conv needs no bias).
        extra = {"depthwise_initializer": _depthwise_initializer(kernel)} if spec.type == "separable_cnn" else {}
        x = conv(filters, kernel, padding=spec.padding, use_bias=not spec.batch_norm, name=f"conv{i}", **extra)(x)
        if spec.batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn")(x)
        x = layers.Activation(spec.activation, name=f"conv{i}_{spec.activation}")(x)
        if spec.pooling != "none" and i in pool_at and min(x.shape[1], x.shape[2]) >= 2:
            pool = layers.MaxPooling2D if spec.pooling == "max" else layers.AveragePooling2D
            x = pool(2, name=f"pool{i}")(x)
    if spec.conv_dropout:
        x = layers.Dropout(spec.conv_dropout, name="conv_dropout")(x)
    return x


def _transfer_body(x, t: TransferSpec, input_shape: tuple[int, int, int], pixel_max: float):
    # keras.applications expect RGB in 0..255 and a minimum side: convert inside the graph.
    if pixel_max != 255:
        x = layers.Rescaling(255.0 / pixel_max, name="to_0_255")(x)
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    h, w = input_shape[:2]
    side = _MIN_SIDE[t.base]
    if h < side or w < side:
        x = layers.Resizing(max(h, side), max(w, side), name="upsample")(x)
        h, w = max(h, side), max(w, side)
    x = ApplicationPreprocess(t.base, name="app_preprocess")(x)
    cls_name = _APPLICATIONS[t.base][0]
    weights = None if t.weights == "none" else t.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise WeightsUnavailable(
            f"model.transfer.weights: file not found. Received: weights={t.weights!r}; expected 'none', 'imagenet' "
            "or the path of an existing weights file"
        )
    try:
        base = getattr(keras.applications, cls_name)(include_top=False, weights=weights, input_shape=(h, w, 3))
    except Exception as exc:  # a download failure surfaces as many different exception types
        if weights == "imagenet":
            raise WeightsUnavailable(
                f"model.transfer.weights: ImageNet weights for {cls_name} could not be loaded ({exc.__class__.__name__}: "
                f"{exc}). Download them once into ~/.keras/models/ (or $KERAS_HOME/models/), or set weights to the "
                "path of a local file, or to 'none'"
            ) from exc
        raise
    if not t.trainable:
        base.trainable = False
    elif t.fine_tune_from is not None:
        for layer in base.layers[: t.fine_tune_from]:
            layer.trainable = False
    # training=False keeps a frozen base's batch-norm statistics fixed even while the head trains.
    return base(x, training=False if not t.trainable else None)


def build_model(
    spec: ModelSpec,
    pre: PreprocessingSpec,
    input_shape: tuple[int, int, int],
    num_classes: int,
    pixel_max: float,
    x_adapt: Optional[np.ndarray] = None,
    name: str = "model",
) -> keras.Model:
    """The classifier; `x_adapt` (training images) is required when `pre.standardize` is on."""
    inputs = keras.Input(shape=input_shape, dtype="float32", name=INPUT_NAME)
    x = inputs
    if spec.type == "transfer":
        x = _transfer_body(x, spec.transfer, input_shape, pixel_max)
    else:
        factor = _rescale_factor(pre, pixel_max)
        if factor is not None and factor != 1.0:
            x = layers.Rescaling(factor, name="rescale")(x)
        if pre.standardize:
            if x_adapt is None:
                raise ValueError("preprocessing.standardize needs the training images to adapt on")
            norm = layers.Normalization(axis=-1, name="standardize")
            sample = x_adapt.astype("float32") * (factor if factor else 1.0)
            norm.adapt(sample)
            x = norm(x)
        if spec.type in ("cnn", "separable_cnn"):
            try:
                x = _conv_body(x, spec)
            except ValueError as exc:  # Keras' shape inference: the spec asks for layers the images cannot feed
                raise BadInputError(
                    f"model: the convolution stack (kernel_size {spec.kernel_size}, {len(spec.conv_filters)} blocks) does not "
                    f"fit images of shape {tuple(input_shape)}; expected a smaller model.kernel_size, fewer "
                    f"model.conv_filters or a larger data.resize ({exc})") from None
    if spec.type == "transfer" or spec.global_pooling != "none":
        pooling = spec.global_pooling if spec.global_pooling != "none" else "avg"
        x = (layers.GlobalAveragePooling2D if pooling == "avg" else layers.GlobalMaxPooling2D)(name="global_pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(spec.dense_units):
        x = layers.Dense(units, use_bias=not spec.batch_norm, name=f"dense{i}")(x)
        if spec.batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"dense{i}_bn")(x)
        x = layers.Activation(spec.activation, name=f"dense{i}_{spec.activation}")(x)
        if spec.dropout:
            x = layers.Dropout(spec.dropout, name=f"dense{i}_dropout")(x)
    # float32 logits even under mixed precision: the softmax/loss need the range.
    outputs = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
