"""Pure helpers every jobctl manifest shares (training jobs here, serving in `k8s/serving*.py`).

Stable API (other modules build on it; keep signatures backward compatible):
    labels(name, component, *, instance=None, extra=None) -> dict[str, str]
    pod_security_context() -> dict
    container_security_context(read_only_root=True) -> dict
    validate_dns1123(name, field) -> str
Everything returns plain dicts in the Kubernetes API's camelCase, ready for `yaml.safe_dump` or the client.
No Kubernetes client import, no TensorFlow: the CLI renders manifests with this alone.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from jobs.spec.fields import DNS1123_LABEL, DNS1123_SUBDOMAIN
from k8s.errors import ManifestError  # noqa: F401 - re-exported: manifest builders raise it

PART_OF = "jobctl"
MANAGED_BY = "jobctl"
# Label keys jobctl reads back (status, list, sweeps): part of the contract with `kubectl -l ...` users.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_JOB = "jobctl.io/job"
LABEL_SWEEP = "jobctl.io/sweep"
LABEL_TRIAL = "jobctl.io/trial"

# The non-root uid/gid of the training and serving images (see Dockerfile); above 10000 so that it never matches a
# host account if a container escapes. Numeric: runAsNonRoot can only be
# verified by the kubelet against a numeric user.
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def validate_dns1123(name: str, field: str, *, max_length: int = 63) -> str:
    """Return `name` when it is a DNS-1123 label (what Kubernetes requires of Service and pod host names).

    Raises ManifestError naming `field`, the value received and the rule, before anything is sent to a cluster.
    """
    if not isinstance(name, str):
        raise ManifestError(f"{field}: expected a string (DNS-1123 label), received {type(name).__name__} {name!r}")
    if not name or len(name) > max_length or not DNS1123_LABEL.fullmatch(name):
        raise ManifestError(
            f"{field}: expected a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a "
            f"letter or digit, 1 to {max_length} characters), received {name!r} ({len(name)} characters)"
        )
    return name


def validate_label(key: str, value: str, field: str) -> None:
    """Kubernetes label syntax: optional DNS-subdomain prefix '/', name <= 63; value <= 63, may be empty."""
    if not isinstance(key, str) or not isinstance(value, str):
        raise ManifestError(
            f"{field}: labels must map strings to strings, received {key!r}: {value!r} "
            f"({type(key).__name__}: {type(value).__name__})"
        )
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix)):
        raise ManifestError(f"{field}: label key {key!r} has an invalid prefix {prefix!r}; expected a DNS subdomain")
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ManifestError(
            f"{field}: label key {key!r} is invalid; expected at most 63 letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit"
        )
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ManifestError(
            f"{field}: label {key!r} has invalid value {value!r}; expected at most 63 letters, digits, '-', '_', "
            "'.', starting and ending with a letter or digit (or empty)"
        )


def labels(
    name: str,
    component: str,
    *,
    instance: Optional[str] = None,
    extra: Optional[Mapping[str, str]] = None,
) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels plus `extra` (e.g. jobctl.io/sweep, jobctl.io/trial).

    `name` is the application's name (e.g. the job or model name), `component` its role ("training", "serving").
    `extra` cannot override the recommended keys: selectors rely on them.
    """
    out = {
        LABEL_NAME: name,
        LABEL_INSTANCE: instance or name,
        LABEL_COMPONENT: component,
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
    }
    for key, value in (extra or {}).items():
        if key in out and out[key] != value:
            raise ManifestError(
                f"labels: {key!r} is set by jobctl to {out[key]!r}; received {value!r}. Choose another label key."
            )
        out[key] = value
    for key, value in out.items():
        validate_label(key, value, "labels")
    return out


def pod_security_context() -> dict:
    """Pod-level: non-root numeric user, files group-writable for the shared volumes, default seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        # Only chown a volume when its root does not already match: a big artifacts PVC would stall every start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool = True) -> dict:
    """Container-level: no privilege escalation, no capabilities, read-only root (writable emptyDirs instead)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": bool(read_only_root),
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


_IMAGE_REFERENCE = re.compile(r"^[a-z0-9]+([._/:@-][A-Za-z0-9_]+)*([:@][A-Za-z0-9_.:-]+)?$")


def validate_image(ref: str, field: str) -> str:
    """A container image reference (registry/repository[:tag][@sha256:digest]); an empty one or one with spaces
    would only fail at pull time, on a node."""
    if not isinstance(ref, str) or not ref or len(ref) > 512 or any(c.isspace() for c in ref) \
            or not _IMAGE_REFERENCE.fullmatch(ref):
        raise ManifestError(f"{field}: expected an image reference such as ghcr.io/org/name:1.0 or "
                            f"name@sha256:<digest>, received {ref!r}")
    return ref


def image_pull_policy(image: str) -> str:
    """One rule for training and serving pods: a digest never changes, so the node's copy is good; a tag may move,
    and every worker, retry and replica must run the same code, so the kubelet checks the registry (a cheap manifest
    request: layers already on the node are not pulled again)."""
    return "IfNotPresent" if "@sha256:" in image else "Always"


def versioned_image(repository: str) -> str:
    """`repository:<jobctl version>`: the tag `make image` builds and pushes for this jobctl ("dev" uninstalled)."""
    try:
        from importlib.metadata import version

        tag = version("jobctl")
    except Exception:  # a checkout that was never installed
        tag = "dev"
    return f"{repository}:{tag}"
