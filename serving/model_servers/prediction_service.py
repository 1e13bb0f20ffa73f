"""tensorflow.serving.PredictionService: Predict, GetModelMetadata, Classify (TF Serving's prediction_service_impl)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from serving import savedmodel
from serving.errors import ServingError
from serving.model_servers.instrumentation import Instrumented
from serving.model_servers.model_manager import ModelManager, Served
from serving.model_servers.validation import validate_inputs
from serving.savedmodel import Signature
from serving.tensors import format_shape, write_ndarray


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
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not supported: jobctl models are classifiers")

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported; use Predict")

    def _predict(self, request, context, info):
        m, v, sig, filters, arrays, rows, batcher = self._predict_inputs(request, info)
        if batcher is not None:
            outputs = batcher.submit(arrays, rows, context.time_remaining())
        else:
            outputs = savedmodel.call(sig, arrays)
            m.metrics.observe_batch(m.name, str(v.number), max(rows, 1))
        return _predict_response(m, v, sig, filters, outputs)

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
        """Classify over tf.Example: feature `images` holds an image's raw pixels (bytes, int64 or float list)."""
        from tensorflow_serving.apis import classification_pb2

        m, v = self.server.servable(request.model_spec)
        info["version"] = str(v.number)
        sig = _signature(v, request.model_spec.signature_name)
        if list(sig.inputs) != [INPUT_NAME] or OUTPUT_PROBABILITIES not in sig.outputs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Classify needs a signature with one input {INPUT_NAME!r} and an output {OUTPUT_PROBABILITIES!r}; "
                f"{sig.key!r} has inputs {sorted(sig.inputs)} and outputs {sorted(sig.outputs)}",
            )
        kind = request.input.WhichOneof("kind")
        if kind != "example_list":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Classify expects input.example_list, received {kind}")
        ti = sig.inputs[INPUT_NAME]
        shape, np_dtype = ti.shape[1:], ti.numpy_dtype
        size = int(np.prod(shape))
        images = []
        for i, ex in enumerate(request.input.example_list.examples):
            feat = ex.features.feature.get(INPUT_NAME)
            if feat is None:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"example {i}: missing feature {INPUT_NAME!r}")
            which = feat.WhichOneof("kind")
            if which == "bytes_list" and len(feat.bytes_list.value) == 1:
                flat = np.frombuffer(feat.bytes_list.value[0], dtype=np.uint8)
            elif which == "int64_list":
                flat = np.asarray(feat.int64_list.value)
            elif which == "float_list":
                flat = np.asarray(feat.float_list.value)
            else:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"example {i}: feature {INPUT_NAME!r} is empty or has several byte strings")
            if flat.size != size:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"example {i}: feature {INPUT_NAME!r} has {flat.size} values; shape {format_shape(shape)} needs {size}",
                )
            images.append(flat.astype(np_dtype).reshape(shape))
        if not images:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "empty batch: the request holds 0 examples; send at least one")
        batch = np.stack(images)
        if len(batch) > self.server.cfg.max_request_batch_size:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"batch of {len(batch)} examples is above this server's limit")
        batcher = v.batchers.get(sig.key)
        outputs = batcher.submit({INPUT_NAME: batch}, len(batch), context.time_remaining()) if batcher else savedmodel.call(sig, {INPUT_NAME: batch})
        names = v.model.class_names or [str(i) for i in range(outputs[OUTPUT_PROBABILITIES].shape[-1])]
        response = classification_pb2.ClassificationResponse()
        response.model_spec.name = m.name
        response.model_spec.version.value = v.number
        response.model_spec.signature_name = sig.key
        for row in outputs[OUTPUT_PROBABILITIES]:
            c = response.result.classifications.add()
            for name, score in zip(names, row):
                c.classes.add(label=name, score=float(score))
        return response


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
    response.model_spec.name = m.name
    response.model_spec.version.value = v.number
    response.model_spec.signature_name = sig.key
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
            write_ndarray(response.outputs[alias], value)
    return response

