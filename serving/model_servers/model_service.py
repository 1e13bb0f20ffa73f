"""tensorflow.serving.ModelService: GetModelStatus (TF Serving's model_service_impl)."""

from __future__ import annotations

import grpc

from serving.errors import ServingError
from serving.model_servers.instrumentation import Instrumented


class ModelServicer(Instrumented):
    def GetModelStatus(self, request, context):
        return self._handle("GetModelStatus", request, context, self._status)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "HandleReloadConfigRequest is not supported; versions are picked up from the base path")

    def _status(self, request, context, info):
        from tensorflow_serving.apis import get_model_status_pb2

        name = request.model_spec.name
        if name and name not in self.server.managers:  # TF Serving's GetModelStatusImpl wording, not Predict's
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        m = self.server.manager(request.model_spec)
        wanted = request.model_spec.version.value if request.model_spec.HasField("version") else None
        with m._lock:
            versions = dict(m.versions)
        if wanted is not None:
            if wanted not in versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {wanted} of model {m.name}")
            versions = {wanted: versions[wanted]}
        if not versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {m.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in sorted(versions, reverse=True):
            v = versions[number]
            s = response.model_version_status.add(version=number, state=v.state)
            s.status.SetInParent()  # always present (error_code OK), as TF Serving's ToStatusProto sets it
            if v.error:
                s.status.error_code = 2  # UNKNOWN: the message says why the version failed to load
                s.status.error_message = v.error
        return response

