"""Resources and distribution: how many workers, devices and which cluster resources."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import (
    Field,
    field_validator,
)

from jobs.spec.fields import QUANTITY, StrictModel, quantity_is_positive


class Toleration(StrictModel):
    key: Optional[str] = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Optional[str] = None
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None
    toleration_seconds: Optional[int] = None


class ResourcesSpec(StrictModel):
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker (nvidia.com/gpu)")
    workers: int = Field(default=1, ge=1, le=64, description="worker pods; > 1 means MultiWorkerMirroredStrategy")
    cpu: str = "2"
    memory: str = "8Gi"
    shm_size: str = "1Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image: Optional[str] = Field(default=None, description="training image; default: the one matching this jobctl")
    active_deadline_seconds: Optional[int] = Field(default=None, ge=1)
    backoff_limit: int = Field(default=3, ge=0, le=100)

    @field_validator("cpu", "memory", "shm_size", mode="before")
    @classmethod
    def _quantity(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not QUANTITY.fullmatch(v):
            raise ValueError(f"expected a Kubernetes quantity such as '2', '500m', '16Gi', received {v!r}")
        if not quantity_is_positive(v):
            raise ValueError(f"expected a quantity above zero such as '2', '500m', '16Gi', received {v!r}")
        return v


class DistributionSpec(StrictModel):
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = Field(
        default="auto",
        description="auto: multi_worker when TF_CONFIG is set, mirrored when several devices are visible, else default",
    )
    worker_timeout_seconds: int = Field(default=300, ge=1, description="how long to wait for peer workers")
    backend: Literal["job", "jobset"] = Field(
        default="job",
        description="the Kubernetes object that runs the workers: job (an Indexed Job, any cluster) or jobset "
        "(JobSet, jobset.x-k8s.io/v1alpha2: restarts the whole group when one worker fails; needs its controller)",
    )
