"""The job spec: YAML in, typed and validated objects out.

Validation happens here, at the boundary, and reports every mistake at once with its field path, the value
received and what is allowed. Everything past `load_spec` works with plain typed objects.
This package must stay light (no TensorFlow): the CLI imports it to validate and render manifests.

One module a section (data, model, training, cluster), the whole `JobSpec` in `job`, loading and errors in `loading`;
this module re-exports the public names, so callers write `from jobs.spec import JobSpec, load_spec`.
"""

from jobs.spec.cluster import DistributionSpec, ResourcesSpec, Toleration
from jobs.spec.data import DataSpec, ValidationSplit
from jobs.spec.fields import (
    DATASETS,
    DNS1123_LABEL,
    MAX_IMAGE_SIDE,
    QUANTITY,
    TRANSFER_BASES,
    StrictModel,
    quantity_is_positive,
)
from jobs.spec.job import JobSpec
from jobs.spec.loading import (
    SpecError,
    apply_overrides,
    field_exists,
    first_model,
    load_spec,
    parse_override_pairs,
    parse_spec,
    read_yaml,
    validation_problems,
)
from jobs.spec.model import ModelSpec, TransferSpec
from jobs.spec.training import (
    AugmentationSpec,
    CallbacksSpec,
    CheckpointSpec,
    EarlyStoppingSpec,
    ExportSpec,
    Monitor,
    PreprocessingSpec,
    ScheduleSpec,
    TensorBoardSpec,
    TrainingSpec,
)

__all__ = [
    "AugmentationSpec",
    "CallbacksSpec",
    "CheckpointSpec",
    "DATASETS",
    "DNS1123_LABEL",
    "DataSpec",
    "DistributionSpec",
    "EarlyStoppingSpec",
    "ExportSpec",
    "JobSpec",
    "MAX_IMAGE_SIDE",
    "ModelSpec",
    "Monitor",
    "PreprocessingSpec",
    "QUANTITY",
    "ResourcesSpec",
    "ScheduleSpec",
    "SpecError",
    "StrictModel",
    "TRANSFER_BASES",
    "TensorBoardSpec",
    "Toleration",
    "TrainingSpec",
    "TransferSpec",
    "ValidationSplit",
    "apply_overrides",
    "field_exists",
    "first_model",
    "load_spec",
    "parse_override_pairs",
    "parse_spec",
    "quantity_is_positive",
    "read_yaml",
    "validation_problems",
]
