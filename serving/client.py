"""jobctl's side of the TF Serving client: jobctl_client.PredictClient (no TensorFlow) with the export contract's
names as defaults, failures in jobctl's error taxonomy (exit codes), and image files -> the model's input batch.

    with PredictClient("localhost:8500", "digits") as client:
        probs = client.predict(images)["probabilities"]          # batched; one deadline per call, retries included
        for row in client.top_k(images, k=3): ...                 # [(class_id, class_name, probability), ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import grpc
import numpy as np

from jobctl_client import PredictClient as _Client
from jobctl_client import RpcFailed
from jobctl_client.client import InputSpec
from jobctl_client.errors import REQUEST_ERROR_CODES
from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from jobs.errors import BadInputError, OperationFailedError

__all__ = ["BadRequestError", "InputSpec", "PredictClient", "PredictError", "load_images"]


class PredictError(OperationFailedError, RpcFailed):
    """A failed RPC, with the gRPC status code and the server's message. `PredictError(code, ...)` builds a
    `BadRequestError` (exit 2) when the code says the request itself is wrong."""

    def __new__(cls, code: grpc.StatusCode, message: str, target: str):
        if cls is PredictError and code in REQUEST_ERROR_CODES:
            cls = BadRequestError
        return super().__new__(cls, code, message, target)

    def __init__(self, code: grpc.StatusCode, message: str, target: str):
        RpcFailed.__init__(self, code, message, target)


class BadRequestError(PredictError, BadInputError):
    """INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, OUT_OF_RANGE: the same request would fail again."""

    exit_code = BadInputError.exit_code  # PredictError comes first in the MRO


class PredictClient(_Client):
    """jobctl_client.PredictClient for jobctl's exports: signature and input from jobs.contract, errors as
    PredictError, a bad argument as BadInputError."""

    def __init__(self, target: str, model: str, *, signature: str = SIGNATURE_NAME, input_name: str = INPUT_NAME,
                 **kwargs):
        try:
            super().__init__(target, model, signature=signature, input_name=input_name, **kwargs)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None

    def failure(self, code: grpc.StatusCode, details: str) -> Exception:
        return PredictError(code, details, self.target)

    def top_k(self, images: np.ndarray, k: int = 3, *, output: Optional[str] = OUTPUT_PROBABILITIES,
              timeout: Optional[float] = None) -> list[list[tuple[int, str, float]]]:
        return super().top_k(images, k, output=output, timeout=timeout)


def load_images(paths: Iterable[Union[str, Path]], shape: Sequence[int], pixel_max: Optional[float] = None, dtype=np.uint8) -> np.ndarray:
    """Image files -> the model's raw-pixel batch: resized to H x W, grey or RGB as C says, values scaled to
    `pixel_max` when the model was trained on a smaller range (digits: 0..16)."""
    from PIL import Image

    h, w, c = (list(shape) + [1])[:3] if len(shape) == 2 else shape
    out = []
    for p in paths:
        try:
            img = Image.open(p)
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{p}: not a readable image ({exc})") from None
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        if pixel_max and pixel_max != 255:
            arr = arr * (pixel_max / 255.0)
        out.append(np.rint(arr) if np.dtype(dtype).kind in "ui" else arr)
    return np.stack(out).astype(dtype)
