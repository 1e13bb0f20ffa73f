"""A Python client for TF Serving's gRPC API (stock `tensorflow/serving` or `jobctl serve`).

Only TF Serving's public messages are used, so the same code talks to both. Importing the stubs imports
TensorFlow (tensorflow-serving-api depends on it, serving#557); `jobctl predict` pays that once.

    with PredictClient("localhost:8500", "digits") as client:
        probs = client.predict(images)["probabilities"]          # batched, retried, deadline per call
        for row in client.top_k(images, k=3): ...                 # [(class_id, class_name, probability), ...]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import grpc
import numpy as np

from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from jobs.errors import BadInputError, OperationFailedError
from serving.errors import REQUEST_ERROR_CODES
from serving.tensors import to_ndarray, write_ndarray

log = logging.getLogger("jobctl.client")
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class PredictError(OperationFailedError):
    """A failed RPC, with the gRPC status code and the server's message. `PredictError(code, ...)` builds a
    `BadRequestError` (exit 2) when the code says the request itself is wrong."""

    def __new__(cls, code: grpc.StatusCode, message: str, target: str):
        if cls is PredictError and code in REQUEST_ERROR_CODES:
            cls = BadRequestError
        return super().__new__(cls, code, message, target)

    def __init__(self, code: grpc.StatusCode, message: str, target: str):
        super().__init__(f"{code.name}: {message} (server {target})")
        self.code, self.details, self.target = code, message, target


class BadRequestError(PredictError, BadInputError):
    """INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION: the same request would fail again."""

    exit_code = BadInputError.exit_code  # PredictError comes first in the MRO


@dataclass
class InputSpec:
    name: str
    dtype: np.dtype
    shape: list[int]  # without the batch dimension; -1 unknown


class PredictClient:
    """One channel, reused; thread-safe (gRPC channels are)."""

    def __init__(
        self,
        target: str,
        model: str,
        *,
        version: Optional[int] = None,
        version_label: Optional[str] = None,
        signature: str = SIGNATURE_NAME,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        batch_size: int = 256,
        tls: bool = False,
        root_certificates: Optional[Union[str, Path]] = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        round_robin: bool = False,
        channel: Optional[grpc.Channel] = None,
    ):
        if version is not None and version_label:
            raise BadInputError(f"choose version ({version}) or version_label ({version_label!r}), not both")
        self.target, self.model, self.version, self.version_label = target, model, version, version_label
        self.signature, self.timeout, self.retries, self.backoff = signature, timeout, retries, backoff
        self.batch_size = batch_size
        options = [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]
        if round_robin:
            # With a headless Service, DNS returns every pod: spread calls instead of sticking to one (serving#1618).
            options.append(("grpc.lb_policy_name", "round_robin"))
        if channel is not None:
            self._channel = channel
        elif tls:
            roots = Path(root_certificates).read_bytes() if root_certificates else None
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._class_names: Optional[list[str]] = None
        self._metadata: Optional[dict] = None

    # -- plumbing
    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _spec(self, spec, signature: Optional[str] = None):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label:
            spec.version_label = self.version_label
        if signature is not None:
            spec.signature_name = signature

    def _call(self, method, request, timeout: Optional[float] = None):
        """Retries UNAVAILABLE (a restarting pod, a draining server) with exponential backoff; never others."""
        timeout = self.timeout if timeout is None else timeout
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in RETRYABLE and attempt < self.retries:
                    delay = self.backoff * (2**attempt)
                    log.info("%s: %s, retry %d/%d in %.2fs", self.target, code.name, attempt + 1, self.retries, delay)
                    time.sleep(delay)
                    attempt += 1
                    continue
                raise PredictError(code, exc.details() or "", self.target) from None

    # -- API
    def predict(self, inputs: Union[np.ndarray, dict], *, output_filter: Sequence[str] = (), timeout: Optional[float] = None) -> dict[str, np.ndarray]:
        """Predict on any number of examples: split into requests of `batch_size`, outputs concatenated."""
        from tensorflow_serving.apis import predict_pb2

        if not isinstance(inputs, dict):
            inputs = {INPUT_NAME: inputs}
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        n = len(next(iter(inputs.values()))) if inputs else 0
        chunks = range(0, n, self.batch_size) if n else [None]
        parts: list[dict] = []
        for start in chunks:
            request = predict_pb2.PredictRequest()
            self._spec(request.model_spec, self.signature)
            for name, value in inputs.items():
                part = value if start is None else value[start : start + self.batch_size]
                write_ndarray(request.inputs[name], part)
            request.output_filter.extend(output_filter)
            response = self._call(self._predict_stub.Predict, request, timeout)
            parts.append({k: _decode(v, k) for k, v in response.outputs.items()})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def metadata(self) -> dict:
        """Signatures as {signature: {"inputs": {name: InputSpec}, "outputs": {...}}}."""
        if self._metadata is None:
            from tensorflow_serving.apis import get_model_metadata_pb2
            from tensorflow.core.framework import types_pb2

            from serving.tensors import dtype_name

            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._spec(request.model_spec)
            response = self._call(self._predict_stub.GetModelMetadata, request)
            defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(defs)
            out = {}
            for key, sig in defs.signature_def.items():
                def specs(m):
                    res = {}
                    for alias, info in m.items():
                        dims = [int(d.size) for d in info.tensor_shape.dim][1:]
                        try:
                            dt = np.dtype(dtype_name(info.dtype)) if info.dtype != types_pb2.DT_STRING else np.dtype(object)
                        except TypeError:
                            dt = np.dtype(object)
                        res[alias] = InputSpec(alias, dt, dims)
                    return res

                out[key] = {"inputs": specs(sig.inputs), "outputs": specs(sig.outputs), "version": response.model_spec.version.value}
            self._metadata = out
        return self._metadata

    def input_spec(self) -> InputSpec:
        sig = self.metadata().get(self.signature)
        if sig is None:
            raise PredictError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{self.signature}" not found.', self.target)
        return next(iter(sig["inputs"].values()))

    def jobctl_metadata(self) -> dict:
        """jobctl.json from `jobctl serve`; {} from stock TF Serving (it rejects the field)."""
        from google.protobuf import wrappers_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["jobctl"])
        self._spec(request.model_spec)
        try:
            response = self._call(self._predict_stub.GetModelMetadata, request)
        except PredictError as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                return {}
            raise
        value = wrappers_pb2.StringValue()
        response.metadata["jobctl"].Unpack(value)
        return json.loads(value.value or "{}")

    def class_names(self) -> Optional[list[str]]:
        """From jobctl.json via `jobctl serve`, else an ensemble's `class_names` signature (any TF Serving)."""
        if self._class_names is None:
            names = self.jobctl_metadata().get("class_names")
            if not names and "class_names" in self.metadata():
                from tensorflow_serving.apis import predict_pb2

                request = predict_pb2.PredictRequest()
                self._spec(request.model_spec, "class_names")
                response = self._call(self._predict_stub.Predict, request)
                names = [s.decode() for s in response.outputs["class_names"].string_val]
            self._class_names = list(names) if names else None
        return self._class_names

    def top_k(self, images: np.ndarray, k: int = 3, **kwargs) -> list[list[tuple[int, str, float]]]:
        probs = self.predict(images, output_filter=[OUTPUT_PROBABILITIES], **kwargs)[OUTPUT_PROBABILITIES]
        names = self.class_names() or [str(i) for i in range(probs.shape[-1])]
        k = min(k, probs.shape[-1])
        order = np.argsort(-probs, axis=-1)[:, :k]
        return [[(int(c), names[c], float(row[c])) for c in idx] for row, idx in zip(probs, order)]

    def status(self) -> list[dict]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._model_stub.GetModelStatus, request)
        state = get_model_status_pb2.ModelVersionStatus.State
        return [
            {"version": s.version, "state": state.Name(s.state), "error_code": s.status.error_code, "error": s.status.error_message}
            for s in response.model_version_status
        ]

    def wait_until_available(self, timeout: float = 60.0) -> int:
        """Poll GetModelStatus until a version is AVAILABLE; returns it."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                avail = [s["version"] for s in self.status() if s["state"] == "AVAILABLE"]
                if avail:
                    return max(avail)
                last = "no AVAILABLE version"
            except PredictError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"model {self.model} on {self.target} not AVAILABLE after {timeout}s (last: {last})")


def _decode(proto, name: str) -> np.ndarray:
    from tensorflow.core.framework import types_pb2

    if proto.dtype == types_pb2.DT_STRING:
        return np.array(list(proto.string_val), dtype=object)
    return to_ndarray(proto, name)


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
