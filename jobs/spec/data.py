"""The data section: which dataset, how it is split, how images are sized."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from jobs.spec.fields import MAX_IMAGE_SIDE, StrictModel


# --------------------------------------------------------------------------------------------------- data
class ValidationSplit(StrictModel):
    """How the validation set is carved out of the training data.

    `fraction` takes the *last* fraction of the training set, like Keras' `validation_split` (seeds 002, 003).
    `train_size` keeps the first N examples for training and the rest for validation (seed 004: first 40k / last 10k).
    `use_test` validates on the test set (seeds 000, 001 do this; fine for demos, not for model selection).
    """

    fraction: Optional[float] = Field(default=None, gt=0.0, lt=1.0)
    train_size: Optional[int] = Field(default=None, ge=1)
    use_test: bool = False
    shuffle: bool = Field(default=False, description="shuffle (with the spec seed) before splitting")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ValidationSplit":
        chosen = [n for n, v in (("fraction", self.fraction), ("train_size", self.train_size), ("use_test", self.use_test)) if v]
        if len(chosen) > 1:
            raise ValueError(f"choose one of fraction, train_size, use_test; received {', '.join(chosen)}")
        if not chosen:
            self.fraction = 0.2
        return self


class DataSpec(StrictModel):
    dataset: Literal["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder", "npz", "tfrecord"] = "digits"
    path: Optional[str] = Field(
        default=None,
        description="image_folder: the root with one sub-folder per class; npz: the file; tfrecord: the directory "
        "`jobctl data pack` wrote (local, or gs://); Keras datasets: a cache directory to read instead of "
        "$KERAS_HOME/datasets",
    )
    validation: ValidationSplit = Field(default_factory=ValidationSplit)
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="held-out test share for datasets without a test split"
    )
    resize: Optional[tuple[int, int]] = Field(default=None, description="[height, width]")
    color_mode: Literal["keep", "grayscale", "rgb"] = "keep"
    class_names: Optional[list[str]] = None
    max_train_examples: Optional[int] = Field(default=None, ge=1, description="cap for quick runs and sweeps")
    split_seed: int = Field(
        default=0, ge=0, description="fixes the held-out test/validation split independently of the training seed"
    )
    cifar100_label_mode: Literal["fine", "coarse"] = "fine"
    # Streaming (docs/data.md): packed shards always stream; an image folder streams when its decoded size would
    # exceed in_memory_max_bytes (0: always stream), else it is decoded into memory (fastest when it fits).
    in_memory_max_bytes: int = Field(
        default=2_000_000_000, ge=0,
        description="image_folder: decode into memory up to this many decoded bytes (N x H x W x C), stream above",
    )
    stream_shuffle_buffer: int = Field(
        default=2048, ge=1,
        description="streamed data: decoded uint8 images held in the shuffle buffer, after the shard order and the "
        "interleave of shards are shuffled (memory: buffer x H x W x C bytes)",
    )
    cache: bool = Field(
        default=False, description="streamed data: keep the decoded images in memory after the first epoch (when they fit)",
    )
    corrupt_records: Literal["error", "skip"] = Field(
        default="error",
        description="streamed data: a record or file that does not decode stops training naming it (error), or is "
        "skipped and counted (skip)",
    )
    verify_checksums: bool = Field(
        default=True, description="tfrecord: check every shard's sha256 against dataset.json before training",
    )

    @field_validator("resize")
    @classmethod
    def _positive_size(cls, v):
        if v is not None and (v[0] < 1 or v[1] < 1):
            raise ValueError(f"expected [height, width] with both >= 1, received {list(v)}")
        if v is not None and (v[0] > MAX_IMAGE_SIDE or v[1] > MAX_IMAGE_SIDE):
            # Every image is held in memory at this size: 100000x100000 RGB is 30 GB an image.
            raise ValueError(f"expected [height, width] with both <= {MAX_IMAGE_SIDE}, received {list(v)}")
        return v

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, v):
        if v is not None:
            if len(v) < 2:
                raise ValueError(f"expected at least 2 class names, received {len(v)}")
            if len(set(v)) != len(v):
                dup = sorted({n for n in v if v.count(n) > 1})
                raise ValueError(f"class names must be unique; duplicated: {dup}")
        return v

    @model_validator(mode="after")
    def _path_when_needed(self) -> "DataSpec":
        if self.dataset in ("image_folder", "npz", "tfrecord") and not self.path:
            what = {"image_folder": "folder", "npz": "file", "tfrecord": "directory `jobctl data pack` wrote"}[self.dataset]
            raise ValueError(f"dataset {self.dataset!r} needs data.path (the {what} to read)")
        return self
