"""Request validation: every request tensor is checked against the signature (names, dtypes, shapes, batch limits)
before it reaches TensorFlow, so bad input costs one INVALID_ARGUMENT, never the process. Messages follow TF
Serving's; shapes are checked too, which TF Serving leaves to kernel errors (tensorflow/serving#1527)."""

from __future__ import annotations

import grpc
import numpy as np

from serving.errors import ServingError
from serving.savedmodel import Signature
from serving.tensors import TensorError, dtype_name, shape_mismatch, to_ndarray


def validate_inputs(sig: Signature, raw: dict, max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """Decode and check request tensors against the signature. Returns (arrays, batch rows)."""
    sent, expected = set(raw), set(sig.inputs)
    if sent != expected:
        extra, missing = sorted(sent - expected), sorted(expected - sent)
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sorted(sent))}}}) != "
            f"len({{{','.join(sorted(expected))}}}). Sent extra: {{{','.join(extra)}}}. "
            f"Missing but required: {{{','.join(missing)}}}.",
        )
    arrays, rows = {}, None
    for index, name in enumerate(sorted(sig.inputs)):
        info, proto = sig.inputs[name], raw[name]
        if proto.dtype != info.dtype:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[{index}] to be {dtype_name(info.dtype)} but {dtype_name(proto.dtype)} is provided "
                f"(input {name!r})",
            )
        try:
            arr = to_ndarray(proto, name)
        except TensorError as exc:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        want = info.shape
        mismatch = shape_mismatch(name, want, arr.shape)
        if mismatch:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, mismatch)
        if arr.ndim >= 1 and want is not None and len(want) >= 1 and want[0] < 0:
            n = int(arr.shape[0])
            if rows is not None and n != rows:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r}: batch size {n} differs from {rows} of the other inputs",
                )
            rows = n
        arrays[name] = arr
    rows = rows or 0
    if sig.inputs and rows == 0 and all(i.shape and i.shape[0] < 0 for i in sig.inputs.values()):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "empty batch: the request holds 0 examples; send at least one")
    if rows > max_rows:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"batch of {rows} examples is above this server's limit of {max_rows} (--max-request-batch-size); "
            "split the request",
        )
    return arrays, rows

