"""JobSpec: the whole job, with the checks that span sections."""

from __future__ import annotations

import hashlib
import json

import yaml
from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from jobs.spec.cluster import DistributionSpec, ResourcesSpec
from jobs.spec.data import DataSpec
from jobs.spec.fields import DNS1123_LABEL, StrictModel
from jobs.spec.model import ModelSpec
from jobs.spec.training import (
    AugmentationSpec,
    CallbacksSpec,
    ExportSpec,
    PreprocessingSpec,
    TrainingSpec,
)


# ------------------------------------------------------------------------------------------------------ job
class JobSpec(StrictModel):
    name: str = Field(description="DNS-1123 label: lower-case letters, digits, '-'; at most 52 characters")
    description: str = ""
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    artifacts_dir: str = Field(default="artifacts", description="runs/ and models/ are written below it")
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    augmentation: AugmentationSpec = Field(default_factory=AugmentationSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    callbacks: CallbacksSpec = Field(default_factory=CallbacksSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    distribution: DistributionSpec = Field(default_factory=DistributionSpec)
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on Kubernetes objects")

    @field_validator("name")
    @classmethod
    def _dns_name(cls, v):
        # 52: the Indexed Job's pod hostname "<name>-<index>" and the Job controller's suffixes must fit 63.
        if len(v) > 52 or not DNS1123_LABEL.fullmatch(v):
            raise ValueError(
                "expected a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter "
                f"or digit, at most 52 characters), received {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "JobSpec":
        problems = []
        if self.distribution.strategy == "multi_worker" and self.resources.workers < 2:
            problems.append(
                "distribution.strategy 'multi_worker' needs resources.workers >= 2, "
                f"received workers={self.resources.workers}"
            )
        if self.distribution.strategy in ("default", "mirrored") and self.resources.workers > 1:
            problems.append(
                f"distribution.strategy {self.distribution.strategy!r} runs on one node, but resources.workers="
                f"{self.resources.workers}; expected 'auto' or 'multi_worker'"
            )
        if self.augmentation.placement == "device" and (self.resources.workers > 1
                                                        or self.distribution.strategy == "multi_worker"):
            problems.append(
                f"augmentation.placement: 'device' with {self.resources.workers} workers; expected 'host': multi-worker "
                "training runs tf-keras, where the device-side step is not implemented"
            )
        crop = self.augmentation.crop_from
        if crop is not None and self.data.resize is None:
            problems.append(f"augmentation.crop_from: {list(crop)} needs data.resize, the window it cuts (the model's "
                            "input size); expected data.resize [height, width] no larger than crop_from")
        elif crop is not None and (crop[0] < self.data.resize[0] or crop[1] < self.data.resize[1]):
            problems.append(f"augmentation.crop_from: {list(crop)} is smaller than data.resize {list(self.data.resize)}; "
                            "expected a size at least data.resize in both dimensions, the window being cut from it")
        steps = self.training.backup_every_steps
        if steps is not None and self.data.validation.use_test:
            problems.append(
                f"training.backup_every_steps: {steps} with data.validation.use_test; expected a validation split "
                "(validation.fraction or train_size): mid-epoch backups are for long runs, whose best epoch must not "
                "be chosen on the test set they report"
            )
        if steps is not None and (self.resources.workers > 1 or self.distribution.strategy == "multi_worker"):
            problems.append(
                f"training.backup_every_steps: {steps} with {self.resources.workers} workers; expected one worker: "
                "multi-worker training (tf-keras) draws a new input order each epoch, so a mid-epoch resume could not "
                "be exact (backups at epoch ends still resume it)"
            )
        if self.distribution.backend == "jobset" and self.resources.workers < 2:
            problems.append(
                "distribution.backend 'jobset' runs a group of workers, but resources.workers="
                f"{self.resources.workers}; expected resources.workers >= 2, or backend 'job' for one worker"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- conveniences used across modules
    @property
    def model_name(self) -> str:
        return self.export.model_name or self.name

    def spec_hash(self) -> str:
        """Stable over key order and formatting; identifies what a run or an export was trained from."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
