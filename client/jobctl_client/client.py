"""PredictClient: TF Serving's gRPC API (stock `tensorflow/serving` or `jobctl serve`) without TensorFlow.

    with PredictClient("localhost:8500", "digits") as client:
        probs = client.predict(images)["probabilities"]       # any number of images, sent in batches
        for row in client.top_k(images, k=3): ...              # [(class_id, class_name, probability), ...]
        client.status(); client.metadata(); client.health()
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import grpc
import numpy as np

from jobctl_client.channel import DEFAULT_MAX_MESSAGE_BYTES, channel_options, make_channel
from jobctl_client.errors import RpcFailed
from jobctl_client.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from jobctl_client.tensors import DT_STRING, numpy_dtype, to_ndarray, write_ndarray

# TF Serving's name for a model's default signature (TensorFlow's DEFAULT_SERVING_SIGNATURE_DEF_KEY); a request
# with an empty signature_name gets it.
DEFAULT_SIGNATURE = "serving_default"
JOBCTL_METADATA_FIELD = "jobctl"  # `jobctl serve`'s GetModelMetadata extension: the export's jobctl.json
CLASS_NAMES_SIGNATURE = "class_names"  # an ensemble's signature that returns its class names (any TF Serving)


@dataclass
class InputSpec:
    name: str
    dtype: np.dtype
    shape: list[int]  # without the batch dimension; -1 unknown


class PredictClient:
    """One channel, reused; thread-safe (gRPC channels are). Failed calls raise RpcFailed after gRPC's retries.

    `timeout` is one deadline for a call and all its retries; `retries` (0-4) retry UNAVAILABLE with gRPC's
    jittered exponential backoff from `backoff` to `max_backoff` seconds. `wait_for_ready` makes a call wait, within
    its deadline, for a server that is not up yet instead of failing at once.
    """

    def __init__(self, target: str, model: str, *, version: Optional[int] = None,
                 version_label: Optional[str] = None, signature: str = DEFAULT_SIGNATURE,
                 input_name: Optional[str] = None, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2,
                 max_backoff: float = 5.0, batch_size: int = 256, tls: bool = False,
                 root_certificates: Optional[Union[str, Path]] = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, round_robin: bool = False,
                 wait_for_ready: bool = False, channel: Optional[grpc.Channel] = None):
        if version is not None and version_label:
            raise ValueError(f"choose version ({version}) or version_label ({version_label!r}), not both")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected at least 1, received {batch_size}")
        self.target, self.model, self.version, self.version_label = target, model, version, version_label
        self.signature, self.input_name, self.timeout, self.batch_size = signature, input_name, timeout, batch_size
        self.wait_for_ready = wait_for_ready
        options = channel_options(retries=retries, backoff=backoff, max_backoff=max_backoff,
                                  max_message_bytes=max_message_bytes, round_robin=round_robin)
        self._channel = channel or make_channel(target, options, tls=tls, root_certificates=root_certificates)
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

    def failure(self, code: grpc.StatusCode, details: str) -> Exception:
        """The exception a failed call raises (a subclass may map it into its own taxonomy)."""
        return RpcFailed(code, details, self.target)

    def _spec(self, spec, signature: Optional[str] = None):
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label:
            spec.version_label = self.version_label
        if signature is not None:
            spec.signature_name = signature

    def _call(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout,
                          wait_for_ready=self.wait_for_ready)
        except grpc.RpcError as exc:
            raise self.failure(exc.code(), exc.details() or "") from None

    # -- API
    def predict(self, inputs: Union[np.ndarray, dict], *, output_filter: Sequence[str] = (),
                timeout: Optional[float] = None) -> dict[str, np.ndarray]:
        """Predict on any number of examples: split into requests of `batch_size`, outputs concatenated. A bare
        array goes to `input_name`, else to the signature's only input."""
        if not isinstance(inputs, dict):
            inputs = {self.input_name or self.input_spec().name: inputs}
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        n = len(next(iter(inputs.values()))) if inputs else 0
        chunks = range(0, n, self.batch_size) if n else [None]
        parts: list[dict] = []
        for start in chunks:
            request = predict_pb2.PredictRequest()
            self._spec(request.model_spec, self.signature)
            for name, value in inputs.items():
                write_ndarray(request.inputs[name], value if start is None else value[start: start + self.batch_size])
            request.output_filter.extend(output_filter)
            response = self._call(self._predict_stub.Predict, request, timeout)
            parts.append({k: to_ndarray(v, k) for k, v in response.outputs.items()})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def metadata(self) -> dict:
        """Signatures as {signature: {"inputs": {name: InputSpec}, "outputs": {...}, "version": N}}."""
        if self._metadata is None:
            request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            self._spec(request.model_spec)
            response = self._call(self._predict_stub.GetModelMetadata, request)
            defs = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(defs)

            def specs(tensors) -> dict:
                out = {}
                for alias, info in tensors.items():
                    try:
                        dtype = numpy_dtype(info.dtype)
                    except ValueError:
                        dtype = np.dtype(object)
                    out[alias] = InputSpec(alias, dtype, [int(d.size) for d in info.tensor_shape.dim][1:])
                return out

            self._metadata = {key: {"inputs": specs(sig.inputs), "outputs": specs(sig.outputs),
                                    "version": response.model_spec.version.value}
                              for key, sig in defs.signature_def.items()}
        return self._metadata

    def _signature_metadata(self) -> dict:
        sig = self.metadata().get(self.signature or DEFAULT_SIGNATURE)
        if sig is None:
            raise self.failure(grpc.StatusCode.FAILED_PRECONDITION,
                               f'Serving signature key "{self.signature}" not found; the model has '
                               f"{sorted(self.metadata())}")
        return sig

    def input_spec(self) -> InputSpec:
        """The signature's input (`input_name`'s, or its only one)."""
        inputs = self._signature_metadata()["inputs"]
        if self.input_name:
            if self.input_name not in inputs:
                raise self.failure(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"input {self.input_name!r} not in signature {self.signature!r}: {sorted(inputs)}")
            return inputs[self.input_name]
        if len(inputs) != 1:
            raise ValueError(f"signature {self.signature!r} has inputs {sorted(inputs)}: pass input_name= "
                             "or a dict of arrays")
        return next(iter(inputs.values()))

    def jobctl_metadata(self) -> dict:
        """jobctl.json from `jobctl serve`; {} from stock TF Serving (it rejects the field)."""
        from google.protobuf import wrappers_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[JOBCTL_METADATA_FIELD])
        self._spec(request.model_spec)
        try:
            response = self._call(self._predict_stub.GetModelMetadata, request)
        except RpcFailed as exc:
            if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                return {}
            raise
        value = wrappers_pb2.StringValue()
        response.metadata[JOBCTL_METADATA_FIELD].Unpack(value)
        return json.loads(value.value or "{}")

    def class_names(self) -> Optional[list[str]]:
        """From jobctl.json via `jobctl serve`, else an ensemble's `class_names` signature (any TF Serving)."""
        if self._class_names is None:
            names = self.jobctl_metadata().get("class_names")
            if not names and CLASS_NAMES_SIGNATURE in self.metadata():
                request = predict_pb2.PredictRequest()
                self._spec(request.model_spec, CLASS_NAMES_SIGNATURE)
                response = self._call(self._predict_stub.Predict, request)
                names = [s.decode() for s in response.outputs[CLASS_NAMES_SIGNATURE].string_val]
            self._class_names = list(names) if names else None
        return self._class_names

    def probabilities_output(self) -> str:
        """The signature's output of class probabilities: its only float output of shape [batch, classes]."""
        outputs = self._signature_metadata()["outputs"]
        found = [k for k, s in outputs.items() if s.dtype.kind == "f" and len(s.shape) == 1]
        if len(found) != 1:
            raise ValueError(f"signature {self.signature!r} outputs {sorted(outputs)}: pass output= to top_k")
        return found[0]

    def top_k(self, images: np.ndarray, k: int = 3, *, output: Optional[str] = None,
              timeout: Optional[float] = None) -> list[list[tuple[int, str, float]]]:
        output = output or self.probabilities_output()
        probs = self.predict(images, output_filter=[output], timeout=timeout)[output]
        names = self.class_names() or [str(i) for i in range(probs.shape[-1])]
        k = min(k, probs.shape[-1])
        order = np.argsort(-probs, axis=-1)[:, :k]
        return [[(int(c), names[c], float(row[c])) for c in idx] for row, idx in zip(probs, order)]

    def status(self) -> list[dict]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        response = self._call(self._model_stub.GetModelStatus, request)
        state = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": state.Name(s.state), "error_code": s.status.error_code,
                 "error": s.status.error_message} for s in response.model_version_status]

    def health(self, service: str = "", timeout: Optional[float] = None) -> str:
        """gRPC health (grpc.health.v1): SERVING, NOT_SERVING, ... for `service` ("" is the whole server)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

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
            except RpcFailed as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"model {self.model} on {self.target} not AVAILABLE after {timeout}s (last: {last})")
