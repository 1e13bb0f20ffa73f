"""The model section: the architecture the recipe builds."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import (
    Field,
    model_validator,
)

from jobs.spec.fields import StrictModel


# -------------------------------------------------------------------------------------------------- model
class TransferSpec(StrictModel):
    base: Literal["vgg16", "mobilenet_v2", "resnet50", "efficientnet_b0"] = "mobilenet_v2"
    weights: str = Field(default="imagenet", description="'none', 'imagenet' or the path of a local weights file")
    trainable: bool = Field(default=False, description="false: frozen base (feature extraction); true: fine-tune")
    fine_tune_from: Optional[int] = Field(
        default=None, ge=0, description="with trainable: freeze base layers before this index"
    )


class ModelSpec(StrictModel):
    type: Literal["mlp", "cnn", "separable_cnn", "transfer"] = "cnn"
    conv_filters: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [32, 64])
    kernel_size: Union[Annotated[int, Field(ge=1)], list[Annotated[int, Field(ge=1)]]] = 3
    padding: Literal["valid", "same"] = "valid"
    pooling: Literal["max", "avg", "none"] = "max"
    pool_after: Optional[list[Annotated[int, Field(ge=0)]]] = Field(
        default=None, description="0-based conv layer indices followed by a pooling layer; null: after every conv"
    )
    global_pooling: Literal["none", "avg", "max"] = Field(default="none", description="none: Flatten")
    dense_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64])
    activation: Literal["relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "leaky_relu"] = "relu"
    batch_norm: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="after each hidden dense layer")
    conv_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="after the conv stack (seed 001)")
    transfer: Optional[TransferSpec] = None

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        problems = []
        if isinstance(self.kernel_size, list) and self.type in ("cnn", "separable_cnn"):
            if len(self.kernel_size) != len(self.conv_filters):
                problems.append(
                    f"kernel_size has {len(self.kernel_size)} entries but conv_filters has {len(self.conv_filters)}; "
                    "expected one kernel size per conv layer or a single int"
                )
        if self.type in ("cnn", "separable_cnn") and not self.conv_filters:
            problems.append(f"model type {self.type!r} needs at least one entry in conv_filters")
        if self.pool_after is not None:
            bad = [i for i in self.pool_after if i >= len(self.conv_filters)]
            if bad:
                problems.append(f"pool_after indices {bad} are past the last conv layer (index {len(self.conv_filters) - 1})")
        if self.type == "transfer" and self.transfer is None:
            self.transfer = TransferSpec()
        if self.type != "transfer" and self.transfer is not None:
            problems.append(f"transfer settings given but model type is {self.type!r}; expected type: transfer")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def kernel_sizes(self) -> list[int]:
        if isinstance(self.kernel_size, int):
            return [self.kernel_size] * len(self.conv_filters)
        return list(self.kernel_size)


# ----------------------------------------------------------------------------------------- preprocessing
