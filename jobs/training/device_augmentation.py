"""`augmentation.placement: device`: the composed augmentation runs inside the compiled train step, on the
accelerator, instead of in the host's tf.data map.

The transform is the host path's own (`jobs.pipeline.augmentation_fn`, same parameters, same seed). It is applied
by the training wrapper's `train_step`, never by a layer of the model: the exported model is the wrapped one,
unchanged, and Keras' Random* layers inside a model (the naive route) collapsed training throughput on an H200
(ANCHORS.md: 159k -> 1.8k images/s on cifar10-cnn).
"""

from __future__ import annotations


def device_augmented(keras, model, augmentation, seed: int, input_shape):
    """A Keras model that trains `model` with `augmentation` applied to each training batch in its train step.

    Its weights are `model`'s; `served_model` is what checkpoints and exports write. Validation and evaluation
    (`test_step`) see the images as they are.
    """
    from jobs.pipeline import augmentation_fn

    augment = augmentation_fn(augmentation, seed)  # built here, under the strategy's scope, like the model

    class DeviceAugmented(keras.Model):
        def __init__(self):
            super().__init__(name=f"{model.name}_device_augmented")
            self.served_model = model

        def call(self, inputs, training=False):
            return self.served_model(inputs, training=training)

        def train_step(self, data):
            x, *rest = data
            return super().train_step((augment(x), *rest))

    trainer = DeviceAugmented()
    trainer(keras.ops.zeros((1, *input_shape)))  # built before fit (BackupAndRestore needs it)
    return trainer


def served(model):
    """The model to checkpoint and export: the wrapped one when training on device-side augmentation."""
    return getattr(model, "served_model", model)
