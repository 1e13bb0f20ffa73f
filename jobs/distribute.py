"""Choosing the `tf.distribute` strategy from the spec and the environment.

Must be called before anything else touches TensorFlow devices: virtual devices and TF_CONFIG are read once.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class StrategyInfo:
    strategy: object  # tf.distribute.Strategy
    kind: str  # "default" | "mirrored" | "multi_worker"
    replicas: int
    workers: int = 1
    task_index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.task_index == 0


def configure_virtual_devices(n: int) -> None:
    """Split the CPU into `n` logical devices: MirroredStrategy on them behaves as on `n` GPUs of one node."""
    import tensorflow as tf

    if n <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)


def select_strategy(kind: str = "auto", virtual_devices: int = 0) -> StrategyInfo:
    import tensorflow as tf

    if virtual_devices > 1:
        configure_virtual_devices(virtual_devices)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = tf.config.list_logical_devices("CPU")
    if kind == "auto":
        if os.environ.get("TF_CONFIG"):
            kind = "multi_worker"
        elif len(gpus) > 1 or (not gpus and len(cpus) > 1):
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "mirrored":
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus]
        strategy = tf.distribute.MirroredStrategy(devices)
        return StrategyInfo(strategy, "mirrored", strategy.num_replicas_in_sync)
    if kind == "multi_worker":
        raise NotImplementedError("multi_worker strategy is provided by the distributed training module")
    return StrategyInfo(tf.distribute.get_strategy(), "default", 1)
