"""Optimizer, learning rate and batch size from the spec: what `model.compile` gets.

The per-epoch schedules that watch a metric (plateau) are callbacks (jobs/training/callbacks.py); the fixed ones
(step, warmup) are Keras' LearningRateScheduler, built here.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from jobs.errors import BadInputError
from jobs.spec import JobSpec


def make_learning_rate(spec: JobSpec, learning_rate: float, steps_per_epoch: int, keras=None):
    """A float, or a per-step schedule for `cosine` (step and plateau schedules are per-epoch callbacks)."""
    if keras is None:
        import keras

    t = spec.training
    if t.schedule.type != "cosine":
        return learning_rate
    total = max(1, t.epochs * steps_per_epoch)
    warmup = t.schedule.warmup_epochs * steps_per_epoch
    alpha = t.schedule.min_learning_rate / learning_rate
    if warmup:
        return keras.optimizers.schedules.CosineDecay(
            0.0, max(1, total - warmup), alpha=alpha, warmup_target=learning_rate, warmup_steps=warmup
        )
    return keras.optimizers.schedules.CosineDecay(learning_rate, total, alpha=alpha)


def make_optimizer(spec: JobSpec, learning_rate, steps_per_epoch: int, keras=None):
    if keras is None:
        import keras

    t = spec.training
    lr: Any = make_learning_rate(spec, learning_rate, steps_per_epoch, keras)
    common: dict[str, Any] = {"learning_rate": lr}
    if t.weight_decay and t.optimizer != "adamw":
        common["weight_decay"] = t.weight_decay
    if t.optimizer == "adam":
        return keras.optimizers.Adam(**common)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=t.weight_decay or 0.004, **common)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(momentum=t.momentum, nesterov=t.nesterov, **common)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(momentum=t.momentum, **common)
    if t.optimizer == "adadelta":
        return keras.optimizers.Adadelta(**common)
    raise BadInputError(f"training.optimizer: unknown optimizer {t.optimizer!r}")




def lr_callbacks(spec: JobSpec, learning_rate: float, keras=None) -> list:
    """The per-epoch learning-rate callbacks: a LearningRateScheduler for step and warmup, the plateau schedule."""
    if keras is None:
        import keras

    s = spec.training.schedule
    if s.type == "step" or (s.type == "constant" and s.warmup_epochs):

        def schedule(epoch, _lr):
            if epoch < s.warmup_epochs:
                return learning_rate * (epoch + 1) / (s.warmup_epochs + 1)
            if s.type == "step":
                return max(s.min_learning_rate, learning_rate * s.factor ** (epoch // s.step_epochs))
            return learning_rate

        return [keras.callbacks.LearningRateScheduler(schedule)]
    if s.type == "plateau":
        from jobs.training.callbacks import PlateauSchedule

        return [PlateauSchedule.from_spec(spec, learning_rate).callback(keras)]
    return []


@contextmanager
def precision_policy(keras_module, mixed: bool):
    """Build under mixed_float16 when asked; the global policy must not leak into later runs."""
    if not mixed:
        yield
        return
    keras_module.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras_module.mixed_precision.set_global_policy("float32")


def batch_and_learning_rate(t, replicas: int, even_split: bool = False) -> tuple[int, float]:
    """(global batch, learning rate) for `replicas` replicas.

    `batch_size_per: global` splits `batch_size` across the replicas (the same optimisation on any number of
    devices); `replica` multiplies it. `scale_learning_rate` applies the linear scaling rule. `even_split`: the
    strategy needs every full batch to split evenly (one-node MirroredStrategy under Keras 3: 32 over 3 replicas
    fails inside TensorFlow with mismatched AddN shapes; multi-worker tf-keras takes uneven shares).
    """
    global_batch = t.batch_size * (replicas if t.batch_size_per == "replica" else 1)
    if global_batch < replicas:
        raise BadInputError(
            f"training.batch_size: a global batch of {global_batch} cannot be split across {replicas} replicas. "
            f"Received: batch_size={t.batch_size}, batch_size_per={t.batch_size_per!r}; expected a global batch "
            f">= {replicas} (or batch_size_per: replica)"
        )
    if even_split and global_batch % replicas:
        raise BadInputError(
            f"training.batch_size: a global batch of {global_batch} cannot be split evenly across {replicas} "
            f"replicas. Received: batch_size={t.batch_size}, batch_size_per={t.batch_size_per!r}; expected a "
            f"multiple of {replicas} (or batch_size_per: replica)"
        )
    return global_batch, t.learning_rate * (replicas if t.scale_learning_rate else 1)

