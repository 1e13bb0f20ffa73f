"""TF Serving's REST API (model_servers/http_rest_api_handler.cc, http_rest_api_util.cc): routing, the handlers,
errors as `{"error": "..."}` with TF Serving's HTTP status for each code, and its request metrics.

    GET  /v1/models/NAME[/versions/N | /labels/L]            model status (GetModelStatusResponse as JSON)
    GET  /v1/models/NAME[/versions/N | /labels/L]/metadata   model metadata (signature_def)
    POST /v1/models/NAME[/versions/N | /labels/L]:predict | :classify | :regress

Every request goes through the gRPC services' own code (prediction_service, model_service, inference), so
versions, labels, validation, batching and error texts are those of gRPC; only JSON is read and written here.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from typing import Callable, Optional

import grpc

from jobs.contract import SIGNATURE_NAME
from serving.errors import ServingError
from serving.model_servers import inference, json_tensor
from serving.model_servers.instrumentation import ServerState, metric_model
from serving.tensors import write_ndarray

log = logging.getLogger("jobctl.serving")

_PREDICTION = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.I)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.I)
_V1 = re.compile(r"/v1/.*", re.I)

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc)
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500, grpc.StatusCode.UNAUTHENTICATED: 401,
}
_INT64_MAX = 2**63 - 1


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


class RestApi:
    """Answers one REST request: (HTTP status, JSON body). Thread-safe; the HTTP server calls it from its threads."""

    def __init__(self, server: ServerState, predictor, models):
        self.server = server
        self.predictor = predictor  # a PredictionServicer: Predict, metadata, Classify/Regress code
        self.models = models  # the ModelServicer: status

    @staticmethod
    def routed(path: str) -> bool:
        return bool(_V1.fullmatch(path))

    def handle(self, method: str, path: str, body: bytes, origin: Optional[str] = None) -> tuple[int, bytes]:
        t0 = time.perf_counter()
        model, api, code, message, answer = "", "", grpc.StatusCode.OK, "", None
        try:
            if method == "OPTIONS":  # CORS preflight, as TF Serving answers it
                if not origin or not re.match(r"https?://", origin):
                    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, "Origin header is missing in CORS preflight")
                return 200, b""
            model, api, run = self._route(method, path)
            answer = run(body)
        except ServingError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:  # a kernel error or a bug: report it, keep serving
            log.exception("REST %s %s failed", method, path)
            code, message = grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
        finally:
            if method != "OPTIONS":
                self.server.metrics.observe(metric_model(self.server, model) if model else "", api, "REST", code.name,
                                            time.perf_counter() - t0)
        if code != grpc.StatusCode.OK:
            return HTTP_STATUS.get(code, 500), error_body(message)
        return 200, json.dumps(answer).encode() + b"\n"

    # -- routing (ParseModelInfo)
    def _route(self, method: str, path: str) -> tuple[str, str, Callable[[bytes], dict]]:
        """(model name, API, the handler taking the body): the name is known before the handler can fail."""
        malformed = ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
        if method == "POST":
            match = _PREDICTION.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, verb = match.groups()
        elif method == "GET":
            match = _STATUS.fullmatch(path)
            if not match:
                raise malformed
            name, version, label, sub = match.groups()
            verb = ""
        else:
            raise malformed
        name = urllib.parse.unquote(name or "")
        label = urllib.parse.unquote(label) if label else None
        number = int(version) if version else None

        def run(body: bytes) -> dict:
            if number is not None and number > _INT64_MAX:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Failed to convert version: {version} to numeric.")
            if method == "GET":
                if not name:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
                if sub and sub == "metadata":
                    return self._metadata(name, number, label)
                return self._status(name, number)
            handler = {"predict": self._predict, "classify": self._classify, "regress": self._regress}.get(verb)
            if handler is None:  # the regex is case-insensitive, the verbs are not (as in TF Serving)
                raise malformed
            return handler(name, number, label, body)

        return name, verb, run

    # -- handlers
    @staticmethod
    def _spec(spec, name: str, version: Optional[int], label: Optional[str], signature: str = ""):
        spec.name = name
        if version is not None:
            spec.version.value = version
        if label is not None:
            spec.version_label = label
        if signature:
            spec.signature_name = signature
        return spec

    def _status(self, name: str, version: Optional[int]) -> dict:
        """Labels are ignored here, as by TF Serving's GetModelStatus: every version, or the one asked for."""
        from google.protobuf.json_format import MessageToDict
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, name, version, None)
        response = self.models._status(request, None, {"version": "none"})
        return MessageToDict(response, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)

    def _metadata(self, name: str, version: Optional[int], label: Optional[str]) -> dict:
        from google.protobuf.json_format import MessageToDict
        from google.protobuf import wrappers_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, name, version, label)
        jobctl = self.server.cfg.jobctl_metadata
        if jobctl:
            request.metadata_field.append("jobctl")
        response = self.predictor._metadata(request, None, {"version": "none"})
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        opts = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        answer = {"model_spec": MessageToDict(response.model_spec, **opts),
                  "metadata": {"signature_def": MessageToDict(defs, **opts)}}
        if jobctl and "jobctl" in response.metadata:
            value = wrappers_pb2.StringValue()
            response.metadata["jobctl"].Unpack(value)
            extra = json.loads(value.value or "{}")
            if extra:  # jobctl's own field (jobctl.json), only for models that have one
                answer["metadata"]["jobctl"] = extra
        return answer

    def _signature(self, name: str, version: Optional[int], label: Optional[str], signature: str):
        """GetInfoMap: the servable and its signature, with TF Serving's REST wording for a missing one."""
        from tensorflow_serving.apis import model_pb2

        spec = self._spec(model_pb2.ModelSpec(), name, version, label, signature)
        m, v = self.server.servable(spec)
        key = signature or SIGNATURE_NAME
        sig = v.model.signatures.get(key) if v.model is not None else None
        if sig is None:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Serving signature name: "{key}" not found in signature def')
        return spec, m, v, sig

    def _predict(self, name, version, label, body) -> dict:
        from tensorflow_serving.apis import predict_pb2

        doc = json_tensor.parse(body)
        signature = json_tensor.signature_name(doc)
        spec, _m, _v, sig = self._signature(name, version, label, signature)
        arrays, fmt = json_tensor.predict_inputs(doc, sig.inputs, signature)
        request = predict_pb2.PredictRequest()
        request.model_spec.CopyFrom(spec)
        for key, array in arrays.items():
            write_ndarray(request.inputs[key], array)
        *_rest, outputs = self.predictor.predict_outputs(request, None, {"version": "none"})
        return json_tensor.predict_answer(outputs, fmt)

    def _examples(self, name, version, label, body):
        from tensorflow_serving.apis import input_pb2

        doc = json_tensor.parse(body)
        signature = json_tensor.signature_name(doc)
        request_input = input_pb2.Input()
        json_tensor.fill_examples(doc, request_input)
        _spec, m, v, sig = self._signature(name, version, label, signature)
        self.server.metrics.observe_examples(m.name, len(inference.examples_of(request_input)))
        return v, sig, request_input

    def _classify(self, name, version, label, body) -> dict:
        v, sig, request_input = self._examples(name, version, label, body)
        return json_tensor.classify_answer(inference.classify(sig, v, request_input, self.server.cfg.max_request_batch_size,
                                                             method_check=self.server.cfg.signature_method_name_check))

    def _regress(self, name, version, label, body) -> dict:
        v, sig, request_input = self._examples(name, version, label, body)
        return json_tensor.regress_answer(inference.regress(sig, v, request_input, self.server.cfg.max_request_batch_size,
                                                           method_check=self.server.cfg.signature_method_name_check))
