"""jobctl's client for TensorFlow Serving's gRPC API (stock `tensorflow/serving` or `jobctl serve`), without
TensorFlow: TF Serving's and TensorFlow's messages compiled into `jobctl_client.protos`, numpy <-> TensorProto in
`jobctl_client.tensors`, retries through gRPC's service config (`jobctl_client.channel`).

    from jobctl_client import PredictClient

    with PredictClient("localhost:8500", "digits") as client:
        client.top_k(images, k=3)
"""

from jobctl_client.client import InputSpec, PredictClient
from jobctl_client.errors import RpcFailed
from jobctl_client.tensors import TensorError, from_ndarray, to_ndarray

__all__ = ["InputSpec", "PredictClient", "RpcFailed", "TensorError", "from_ndarray", "to_ndarray"]
