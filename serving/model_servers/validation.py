"""Request validation: every request tensor is checked against the signature (names, dtypes, shapes, batch limits)
before it reaches TensorFlow, so bad input costs one INVALID_ARGUMENT, never the process. Messages follow TF
Serving's. A shape the signature does not declare is no error by itself: TF Serving feeds the graph anyway and lets
the kernels decide (tensorflow/serving#1527), and so does this server; only when the model then fails does the
request get the clearer error naming both shapes."""

from __future__ import annotations

import grpc
import numpy as np

from serving import savedmodel
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
    arrays, rows, mismatches = {}, None, []
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
            mismatches.append(mismatch)
        if arr.ndim >= 1 and want is not None and len(want) >= 1 and want[0] < 0:
            n = int(arr.shape[0])
            if rows is not None and n != rows:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {name!r}: batch size {n} differs from {rows} of the other inputs",
                )
            rows = n
        arrays[name] = arr
    if mismatches and not _model_answers(sig, arrays):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, mismatches[0])
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



def _model_answers(sig: Signature, arrays: dict[str, np.ndarray]) -> bool:
    """Whether the model runs on inputs outside its declared shapes (TF Serving answers those; so must this)."""
    if any(a.size > _TRIAL_LIMIT for a in arrays.values()):
        return False
    try:
        savedmodel.call(sig, arrays)
    except Exception:  # any kernel or binding error: the request fails, with the clearer message
        return False
    return True


# Elements per input beyond which a request outside the declared shapes is refused without a trial run: the trial
# costs one model call, fine for the odd request TF Serving would answer, not for a large tensor that will fail.
_TRIAL_LIMIT = 1 << 22
