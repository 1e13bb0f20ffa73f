"""Shared field rules of the job spec: the strict base model, name and quantity patterns, the known datasets."""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Most object names (ConfigMap, Secret, PVC, PriorityClass, ...): dot-separated DNS-1123 labels, at most 253.
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_IMAGE_SIDE = 4096
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")


def quantity_is_positive(v: str) -> bool:
    """A request or limit of zero or less is refused by the API server (or means no resources at all)."""
    try:
        return float(QUANTITY.fullmatch(v).group(1)) > 0
    except (AttributeError, ValueError):
        return False

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder", "npz", "tfrecord")
TRANSFER_BASES = ("vgg16", "mobilenet_v2", "resnet50", "efficientnet_b0")


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

