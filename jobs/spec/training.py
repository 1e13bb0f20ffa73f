"""Preprocessing, augmentation, training, callbacks and export sections."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from jobs.spec.fields import StrictModel


class PreprocessingSpec(StrictModel):
    rescale: Union[Literal["auto"], float, None] = Field(
        default="auto",
        description="multiply pixels by this; 'auto' divides by the dataset's maximum value (255, or 16 for digits)",
    )
    standardize: bool = Field(default=False, description="feature-wise mean/variance adapted on the training data")

    @field_validator("rescale", mode="before")
    @classmethod
    def _fraction_strings(cls, v):
        # Users copy `rescale=1./255` from notebooks: accept "1/255" too.
        if isinstance(v, str) and v != "auto":
            m = re.fullmatch(r"\s*([0-9.]+)\s*/\s*([0-9.]+)\s*", v)
            if not m:
                raise ValueError(f"expected a number, 'auto', a fraction like '1/255' or null, received {v!r}")
            return float(m.group(1)) / float(m.group(2))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
            raise ValueError(f"expected a positive number, received {v}")
        return v


class AugmentationSpec(StrictModel):
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(default=0.0, ge=0.0, le=1.0, description="fraction of a full turn, as keras RandomRotation")
    translation: float = Field(default=0.0, ge=0.0, lt=1.0, description="fraction of height/width")
    zoom: float = Field(default=0.0, ge=0.0, lt=1.0)
    contrast: float = Field(default=0.0, ge=0.0, lt=1.0)
    crop_from: Optional[tuple[int, int]] = Field(
        default=None,
        description="[height, width]: training images are resized to this size (streamed ones are decoded at it; a "
                    "pack stored at it skips the resize) and each gives a random data.resize window, the ResNet "
                    "recipe's 256 -> 224. Evaluation and serving see images resized to data.resize, as Keras' "
                    "RandomCrop at inference. The crop runs on the host whatever the placement: it sets the batch's shape",
    )
    placement: Literal["host", "device"] = Field(
        default="host",
        description="host: in the tf.data map, on the CPU cores; device: inside the compiled train step, on the "
                    "accelerator (never in the exported model). docs/spec.md says when device pays",
    )

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or self.crop_from is not None or any(
            (self.rotation, self.translation, self.zoom, self.contrast))

    @field_validator("crop_from")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and min(v) < 1:
            raise ValueError(f"expected [height, width] of positive pixels, received {list(v)}")
        return v


# ------------------------------------------------------------------------------------------------ training
class ScheduleSpec(StrictModel):
    type: Literal["constant", "cosine", "step", "plateau"] = "constant"
    step_epochs: int = Field(default=10, ge=1, description="step: decay every N epochs")
    factor: float = Field(default=0.1, gt=0.0, lt=1.0, description="step and plateau: multiply the rate by this")
    patience: int = Field(default=2, ge=0, description="plateau: epochs without improvement before decaying")
    min_learning_rate: float = Field(default=0.0, ge=0.0)
    warmup_epochs: int = Field(default=0, ge=0)


class TrainingSpec(StrictModel):
    optimizer: Literal["adam", "sgd", "rmsprop", "adadelta", "adamw"] = "adam"
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, description="adamw (and decoupled decay for others)")
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    batch_size: int = Field(default=32, ge=1, le=65536)
    batch_size_per: Literal["global", "replica"] = Field(
        default="global", description="global: batch_size is split across replicas; replica: multiplied by them"
    )
    scale_learning_rate: bool = Field(default=False, description="multiply the learning rate by the replica count")
    epochs: int = Field(default=10, ge=1, le=100000)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    mixed_precision: bool = False
    deterministic: bool = Field(default=False, description="tf.config.experimental.enable_op_determinism")
    jit_compile: bool = Field(default=False, description="XLA; measured slower on CPU, so off by default")
    steps_per_execution: int = Field(
        default=16, ge=1, le=10000,
        description="batches per call into the compiled train step (Keras' compile(steps_per_execution)): fewer "
                    "Python round trips per epoch, measured 1.2-1.4x faster epochs on CPU; lowered to a divisor of "
                    "the steps per epoch so that every epoch is exactly one pass; 1: Keras' default. Distributed runs use 1 "
                    "(keras-team/keras#19246)",
    )
    shuffle_buffer: Optional[int] = Field(
        default=None, ge=1,
        description="none: a uniform shuffle of the whole training set every epoch (Keras fit(shuffle=True)); "
                    "N: tf.data's windowed shuffle over N examples; 1: the order as stored",
    )
    backup_every_steps: Optional[int] = Field(
        default=None, ge=1,
        description="also back up every N training steps (Keras BackupAndRestore(save_freq=N)), so a preempted run "
                    "resumes in the middle of an epoch; none: at epoch ends only. docs/distributed.md says what a "
                    "mid-epoch resume replays",
    )

    @model_validator(mode="after")
    def _settings_the_optimizer_and_schedule_use(self) -> "TrainingSpec":
        # A setting that would be silently ignored is a mistake the user should hear about.
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(f"nesterov applies to optimizer 'sgd' only, received optimizer {self.optimizer!r}")
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum applies to optimizers 'sgd' and 'rmsprop', received optimizer "
                             f"{self.optimizer!r} with momentum {self.momentum}")
        sch = self.schedule
        if sch.warmup_epochs and sch.type == "plateau":
            raise ValueError("schedule.warmup_epochs applies to the constant, step and cosine schedules, not to "
                             f"plateau; received warmup_epochs {sch.warmup_epochs}")
        if sch.warmup_epochs >= self.epochs:
            raise ValueError(f"schedule.warmup_epochs: expected fewer than epochs ({self.epochs}), received "
                             f"{sch.warmup_epochs}")
        if sch.min_learning_rate >= self.learning_rate and sch.type != "constant":
            raise ValueError(f"schedule.min_learning_rate: expected below learning_rate ({self.learning_rate}), "
                             f"received {sch.min_learning_rate}")
        return self


# ----------------------------------------------------------------------------------------------- callbacks
# What every epoch logs (the loss and the one compiled metric, on training and validation data): a monitor must
# be one of them, or the run would train to the end and only then find nothing to choose the best epoch by.
Monitor = Literal["val_accuracy", "val_loss", "accuracy", "loss"]


def _direction(monitor: str) -> str:
    return "max" if "accuracy" in monitor else "min"


class CheckpointSpec(StrictModel):
    monitor: Monitor = "val_accuracy"
    mode: Literal["auto", "min", "max"] = "auto"

    @model_validator(mode="after")
    def _mode_matches_the_monitor(self) -> "CheckpointSpec":
        if self.mode != "auto" and self.mode != _direction(self.monitor):
            raise ValueError(f"mode {self.mode!r} with monitor {self.monitor!r} keeps the worst epoch; expected "
                             f"mode {_direction(self.monitor)!r} or 'auto'")
        return self

    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return _direction(self.monitor)


class EarlyStoppingSpec(StrictModel):
    enabled: bool = False
    monitor: Monitor = "val_loss"
    patience: int = Field(default=3, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best_weights: bool = True

    def resolved_mode(self) -> str:
        return _direction(self.monitor)


class TensorBoardSpec(StrictModel):
    enabled: bool = True
    histogram_freq: int = Field(default=0, ge=0)
    profile_batch: int = Field(default=0, ge=0)


class CallbacksSpec(StrictModel):
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    tensorboard: TensorBoardSpec = Field(default_factory=TensorBoardSpec)
    csv_history: bool = True


# ------------------------------------------------------------------------------------------------- export
class ExportSpec(StrictModel):
    model_name: Optional[str] = Field(default=None, description="default: the spec name")
    version: Union[Literal["increment", "timestamp"], Annotated[int, Field(ge=1)]] = "increment"
    input_dtype: Literal["uint8", "float32"] = "uint8"
    warmup_requests: int = Field(default=8, ge=0, le=1000, description="TF Serving reads at most 1000")

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, v):
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", v):
            raise ValueError(f"expected letters, digits, '_', '.', '-' (at most 63), received {v!r}")
        return v


# ---------------------------------------------------------------------------------------------- resources
