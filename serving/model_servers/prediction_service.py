"""tensorflow.serving.PredictionService: Predict, GetModelMetadata, Classify, Regress (TF Serving's\nprediction_service_impl); Classify and Regress run in inference.py, which REST shares."""

from __future__ import annotations

import asyncio

import grpc

from jobs.contract import SIGNATURE_NAME
from serving import savedmodel
from serving.errors import ServingError
from serving.model_servers import inference
from serving.model_servers.instrumentation import Instrumented
from serving.model_servers.model_manager import ModelManager, Served
from serving.model_servers.validation import validate_inputs
from serving.savedmodel import Signature
from serving.tensors import write_ndarray_fields


def _signature(v: Served, name: str) -> Signature:
    key = name or SIGNATURE_NAME
    model = v.model
    if model is None or key not in model.signatures:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
    return model.signatures[key]



class PredictionServicer(Instrumented):
    def Predict(self, request, context):
        return self._handle("Predict", request, context, self._predict)

    def GetModelMetadata(self, request, context):
        return self._handle("GetModelMetadata", request, context, self._metadata)

    def Classify(self, request, context):
        return self._handle("Classify", request, context, self._classify)

    def Regress(self, request, context):
        return self._handle("Regress", request, context, self._regress)

    def MultiInference(self, request, context):
        return self._handle("MultiInference", request, context, self._multi_inference)

    def _predict(self, request, context, info):
        return _predict_response(*self.predict_outputs(request, context.time_remaining(), info))

    def predict_outputs(self, request, deadline, info) -> tuple:
        """(manager, version, signature, output filter, outputs): Predict up to its response (REST shares it)."""
        m, v, sig, filters, arrays, rows, batcher = self._predict_inputs(request, info)
        if batcher is not None:
            outputs = batcher.submit(arrays, rows, deadline)
        else:
            outputs = savedmodel.call(sig, arrays)
            m.metrics.observe_batch(m.name, str(v.number), max(rows, 1))
        return m, v, sig, filters, outputs

    def _predict_inputs(self, request, info):
        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        sig = _signature(v, request.model_spec.signature_name)
        filters = list(request.output_filter)
        for alias in filters:
            if alias not in sig.outputs:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(sig.outputs))}}}.",
                )
        arrays, rows = validate_inputs(sig, request.inputs, self.server.cfg.max_request_batch_size)
        return m, v, sig, filters, arrays, rows, v.batchers.get(sig.key)

    def _metadata(self, request, context, info):
        from google.protobuf import wrappers_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field")
        supported = ("signature_def", "jobctl") if self.server.cfg.jobctl_metadata else ("signature_def",)
        for f in fields:
            if f not in supported:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {f} is not supported")
        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        model = v.model
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = m.name
        response.model_spec.version.value = v.number
        if "signature_def" in fields:
            defs = get_model_metadata_pb2.SignatureDefMap()
            for key, sig_def in model.signature_defs.items():
                if not key.startswith("__"):
                    defs.signature_def[key].CopyFrom(sig_def)
            response.metadata["signature_def"].Pack(defs)
        if "jobctl" in fields:
            # jobctl's own field (jobctl.json as JSON): class names for clients. Stock TF Serving rejects it
            # with INVALID_ARGUMENT; the client then falls back (serving/client.py).
            import json

            response.metadata["jobctl"].Pack(wrappers_pb2.StringValue(value=json.dumps(model.metadata)))
        return response

    def _classify(self, request, context, info):
        from tensorflow_serving.apis import classification_pb2

        m, v, sig = self._example_servable(request, info)
        results = inference.classify(sig, v, request.input, self.server.cfg.max_request_batch_size, context.time_remaining(),
                                     self.server.cfg.signature_method_name_check)
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, m, v, sig)
        for row in results:
            c = response.result.classifications.add()
            for label, score in row:
                c.classes.add(label=label, score=score)
        return response

    def _regress(self, request, context, info):
        from tensorflow_serving.apis import regression_pb2

        m, v, sig = self._example_servable(request, info)
        values = inference.regress(sig, v, request.input, self.server.cfg.max_request_batch_size, context.time_remaining(),
                                  self.server.cfg.signature_method_name_check)
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, m, v, sig)
        for value in values:
            response.result.regressions.add(value=value)
        return response

    def _example_servable(self, request, info):
        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        self.server.metrics.observe_examples(m.name, len(inference.examples_of(request.input)))
        return m, v, _signature(v, request.model_spec.signature_name)


    def _multi_inference(self, request, context, info):
        """Several classify/regress signatures of one model over the same Examples (TF Serving's multi_inference)."""
        from tensorflow_serving.apis import inference_pb2

        if not request.tasks:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Found no tasks in the MultiInferenceRequest.")
        names = {t.model_spec.name for t in request.tasks}
        if len(names) != 1:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        seen = set()
        for t in request.tasks:
            if t.model_spec.signature_name in seen:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Duplicate evaluation of signature: {t.model_spec.signature_name}")
            seen.add(t.model_spec.signature_name)
        m, v = self.server.servable(request.tasks[0].model_spec)
        info["version"] = str(v.number)
        self.server.metrics.observe_examples(m.name, len(inference.examples_of(request.input)))
        response = inference_pb2.MultiInferenceResponse()
        limit, check = self.server.cfg.max_request_batch_size, self.server.cfg.signature_method_name_check
        for t in request.tasks:
            sig = _signature(v, t.model_spec.signature_name)
            if t.method_name not in (inference.CLASSIFY_METHOD, inference.REGRESS_METHOD):
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {t.method_name}")
            result = response.results.add()
            _fill_spec(result.model_spec, m, v, sig)
            if t.method_name == inference.CLASSIFY_METHOD:
                for row in inference.classify(sig, v, request.input, limit, context.time_remaining(), check):
                    c = result.classification_result.classifications.add()
                    for label, score in row:
                        c.classes.add(label=label, score=score)
            else:
                for value in inference.regress(sig, v, request.input, limit, context.time_remaining(), check):
                    result.regression_result.regressions.add(value=value)
        return response


def _fill_spec(spec, m: ModelManager, v: Served, sig: Signature) -> None:
    spec.name = m.name
    spec.version.value = v.number
    spec.signature_name = sig.key


class AsyncPredictionServicer(PredictionServicer):
    """Predict as a coroutine, for the asyncio transport: a request waits for its batch on the event loop instead
    of holding a thread, so the GIL is not passed among dozens of threads per request and the batch thread wakes
    the loop once per batch. The other methods are rare and stay synchronous (gRPC's migration thread pool)."""

    async def Predict(self, request, context):
        return await self._handle_async("Predict", request, context, self._predict_async)

    async def _predict_async(self, request, context, info):
        m, v, sig, filters, arrays, rows, batcher = self._predict_inputs(request, info)
        if batcher is not None:
            outputs = await batcher.submit_async(arrays, rows, self.server.executor)
        else:
            outputs = await asyncio.get_running_loop().run_in_executor(self.server.executor, savedmodel.call, sig, arrays)
            m.metrics.observe_batch(m.name, str(v.number), max(rows, 1))
        return _predict_response(m, v, sig, filters, outputs)


def _predict_response(m: ModelManager, v: Served, sig: Signature, filters: list, outputs: dict):
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, m, v, sig)
    for alias, value in outputs.items():
        if filters and alias not in filters:
            continue
        if value.dtype == object:
            from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

            response.outputs[alias].CopyFrom(tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]),
                string_val=[s if isinstance(s, bytes) else str(s).encode() for s in value.reshape(-1)],
            ))
        else:
            write_ndarray_fields(response.outputs[alias], value)
    return response

