"""A failed RPC, as jobctl_client raises it: the gRPC status code, the server's message and the target."""

from __future__ import annotations

import grpc

# TF Serving answers these when the request itself is wrong: the same request will fail again.
REQUEST_ERROR_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
})


class RpcFailed(Exception):
    """An RPC failed after gRPC's retries: `code` (grpc.StatusCode), `details` (the server's message), `target`.
    `bad_request` is true when the code says the request is wrong (retrying cannot help)."""

    def __init__(self, code: grpc.StatusCode, details: str, target: str):
        super().__init__(f"{code.name}: {details} (server {target})")
        self.code, self.details, self.target = code, details, target

    @property
    def bad_request(self) -> bool:
        return self.code in REQUEST_ERROR_CODES
