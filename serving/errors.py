"""Serving's errors, in jobctl's taxonomy (jobs.errors): each carries TF Serving's status code for the wire and an
exit code for the CLI. A request the client got wrong (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
OUT_OF_RANGE) is a `BadInputError` (exit 2, retrying cannot help); anything else is an `OperationFailedError` (1).
"""

from __future__ import annotations

import grpc

from jobctl_client.errors import REQUEST_ERROR_CODES
from jobs.errors import BadInputError, OperationFailedError


class ServingError(OperationFailedError):
    """A failed request with its gRPC status code and TF Serving's message. `ServingError(code, message)` builds
    a `RequestError` when the code says the request itself is wrong, so callers need not pick the class."""

    def __new__(cls, code: grpc.StatusCode, message: str):
        if cls is ServingError and code in REQUEST_ERROR_CODES:
            cls = RequestError
        return super().__new__(cls, code, message)

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class RequestError(ServingError, BadInputError):
    """The request is wrong (bad tensor, unknown model, version, label or signature): exit 2 in the CLI."""

    exit_code = BadInputError.exit_code  # ServingError comes first in the MRO
