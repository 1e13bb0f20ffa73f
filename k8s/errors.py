"""The errors of the Kubernetes layer, inside jobctl's one taxonomy (jobs/errors.py).

A request that could never succeed (a bad argument, a name no object can have, a spec that cannot become a
manifest) is a BadInputError: exit 2, never retried. Everything the cluster answers or fails to answer (forbidden,
unreachable, conflict, not found, a failed rollback) is an OperationFailedError: exit 1, the same as before the
split. `str()` of each says what, why, and what to do.
"""

from __future__ import annotations

from typing import Optional

from jobs import exit_codes
from jobs.errors import BadInputError, OperationFailedError


class ManifestError(BadInputError):
    """Input that cannot become a valid Kubernetes object. The message names the field, the value and the rule."""


class KubeError(OperationFailedError):
    """A Kubernetes request failed (exit 1)."""

    def __init__(self, message: str, *, status: Optional[int] = None, reason: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class BadArgumentError(KubeError, BadInputError):
    """An argument no request can satisfy (exit 2, not 1)."""

    exit_code = exit_codes.BAD_SPEC


class InvalidNameError(BadArgumentError):
    """A name that no Kubernetes object can have. Never sent: an empty one would address the whole collection
    (a DELETE of it deletes every Job in the namespace)."""


class ConfigurationError(KubeError):
    """No usable kubeconfig or in-cluster configuration."""


class ApiUnreachableError(KubeError):
    pass


class ForbiddenError(KubeError):
    pass


class ConflictError(KubeError):
    pass


class NotFoundError(KubeError):
    pass


class ApiMissingError(NotFoundError):
    """The API (a CRD such as Kueue's or JobSet's) is not served by this cluster."""


class RollbackError(KubeError):
    """A create failed and so did removing what had been created; `left_behind` lists kind/name."""

    def __init__(self, message: str, left_behind: list[str]):
        super().__init__(message)
        self.left_behind = left_behind
