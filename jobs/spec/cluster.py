"""Resources and distribution: how many workers, devices and which cluster resources."""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from jobs.spec.fields import DNS1123_LABEL, DNS1123_SUBDOMAIN, QUANTITY, StrictModel, quantity_is_positive

# Node labels that name a node's GPU model: NVIDIA GPU feature discovery (any cluster with the GPU operator), GKE.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class Toleration(StrictModel):
    key: Optional[str] = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Optional[str] = None
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None
    toleration_seconds: Optional[int] = None


class ResourcesSpec(StrictModel):
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per worker (nvidia.com/gpu)")
    workers: int = Field(default=1, ge=1, le=64, description="worker pods; > 1 means MultiWorkerMirroredStrategy")
    # Unset: 2 cores, 8Gi, 1Gi /dev/shm without GPUs; per GPU otherwise (k8s/sizing.py, docs/kubernetes.md).
    cpu: Optional[str] = Field(default=None, description="cores per worker; default 2, or 8 per GPU")
    memory: Optional[str] = Field(default=None, description="memory per worker; default 8Gi, or 16Gi per GPU")
    shm_size: Optional[str] = Field(default=None, description="/dev/shm per worker; default 1Gi, or 2Gi per GPU")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    image: Optional[str] = Field(default=None, description="training image; default: the one matching this jobctl")
    active_deadline_seconds: Optional[int] = Field(default=None, ge=1)
    backoff_limit: int = Field(default=3, ge=0, le=100)
    queue: Optional[str] = Field(default=None, description="Kueue LocalQueue; Kueue then admits (un-suspends) the job")
    priority_class: Optional[str] = Field(default=None, description="PriorityClass of the pods (preemption order)")
    gpu_type: Optional[str] = Field(default=None, description="GPU model as the nodes' gpu_label names it, e.g. NVIDIA-H100-80GB-HBM3")
    gpu_label: str = Field(default=GPU_PRODUCT_LABEL, description=f"node label naming the GPU model ({GKE_ACCELERATOR_LABEL} on GKE)")

    @field_validator("cpu", "memory", "shm_size", mode="before")
    @classmethod
    def _quantity(cls, v):
        if v is None:
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not QUANTITY.fullmatch(v):
            raise ValueError(f"expected a Kubernetes quantity such as '2', '500m', '16Gi', received {v!r}")
        if not quantity_is_positive(v):
            raise ValueError(f"expected a quantity above zero such as '2', '500m', '16Gi', received {v!r}")
        return v

    @field_validator("queue")
    @classmethod
    def _queue(cls, v):
        if v is not None and (len(v) > 63 or not DNS1123_LABEL.fullmatch(v)):
            raise ValueError(f"expected a Kueue LocalQueue name, a DNS-1123 label (lower-case letters, digits and "
                             f"'-', starting and ending with a letter or digit, at most 63 characters), received {v!r}")
        return v

    @field_validator("priority_class")
    @classmethod
    def _priority_class(cls, v):
        if v is not None and (len(v) > 253 or not DNS1123_SUBDOMAIN.fullmatch(v)):
            raise ValueError(f"expected a PriorityClass name, a DNS-1123 subdomain (lower-case letters, digits, '-' "
                             f"and '.', starting and ending with a letter or digit), received {v!r}")
        return v

    @field_validator("gpu_type")
    @classmethod
    def _gpu_type(cls, v):
        if v is not None and not _LABEL_VALUE.fullmatch(v):
            raise ValueError(f"expected a node label value such as NVIDIA-H100-80GB-HBM3 or nvidia-h100-80gb (letters, "
                             f"digits, '-', '_', '.', at most 63), received {v!r}")
        return v

    @field_validator("gpu_label")
    @classmethod
    def _gpu_label(cls, v):
        prefix, _, name = v.rpartition("/") if isinstance(v, str) else ("", "", "")
        if not name or not _LABEL_NAME.fullmatch(name) or (prefix and not DNS1123_SUBDOMAIN.fullmatch(prefix)):
            raise ValueError(f"expected a node label key such as {GPU_PRODUCT_LABEL} or {GKE_ACCELERATOR_LABEL}, "
                             f"received {v!r}")
        return v

    @model_validator(mode="after")
    def _gpu_type_needs_gpus(self) -> "ResourcesSpec":
        if self.gpu_type is not None and self.gpus == 0:
            raise ValueError(f"gpu_type {self.gpu_type!r} asks for nodes with that GPU, but gpus is 0; expected "
                             "resources.gpus >= 1 with resources.gpu_type, or no gpu_type")
        if self.gpu_type is not None and self.node_selector.get(self.gpu_label, self.gpu_type) != self.gpu_type:
            raise ValueError(f"node_selector sets {self.gpu_label}={self.node_selector[self.gpu_label]!r} and gpu_type "
                             f"asks for {self.gpu_type!r}; expected one of them")
        return self


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
