"""The floor of any Python gRPC server on this machine: TF Serving's Predict with an empty handler.

It parses the PredictRequest and answers a canned PredictResponse of the real size (ten float32 probabilities),
on the same grpcio thread-pool server `jobctl serve` uses without batching, and does nothing else: no model, no
validation, no metrics. bench_serving measures it beside the real servers, in the same run and with the same
client, so the report can say how much of a request's time and CPU is Python gRPC itself, which no Python server
can remove, and what that leaves for the targets.

    python -m bench.grpc_floor --port 8600
"""

from __future__ import annotations

import argparse
import sys
from concurrent import futures

import numpy as np

from jobs.contract import SIGNATURE_NAME


def canned_response(model: str, outputs: int = 10):
    from tensorflow_serving.apis import predict_pb2

    from serving.tensors import from_ndarray

    resp = predict_pb2.PredictResponse()
    resp.model_spec.name = model
    resp.model_spec.version.value = 1
    resp.model_spec.signature_name = SIGNATURE_NAME
    resp.outputs["probabilities"].CopyFrom(from_ndarray(np.full((1, outputs), 1.0 / outputs, np.float32)))
    return resp


def start(port: int, workers: int, host: str = "127.0.0.1"):
    """A started grpc.server answering Predict with the canned response; returns (server, bound port)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    class EmptyPredict(prediction_service_pb2_grpc.PredictionServiceServicer):
        def __init__(self):
            self.responses = {}

        def Predict(self, request, context):
            name = request.model_spec.name
            if name not in self.responses:
                self.responses[name] = canned_response(name)
            return self.responses[name]

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(EmptyPredict(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server, bound


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=64, help="gRPC handler threads (as `jobctl serve --workers`)")
    args = parser.parse_args(argv)
    server, _ = start(args.port, args.workers, args.host)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
