"""TF Serving's and TensorFlow's messages and services, compiled from client/protos/descriptor_set.textproto by
client/scripts/generate_stubs.py (the subpackages are generated; do not edit them).

The modules live under `jobctl_client.protos.*` and register their files in POOL, not in protobuf's default pool,
so they load beside `tensorflow` and `tensorflow_serving.apis` whatever versions those are.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
# The well-known types the services import (google.protobuf.Any in model metadata, wrappers in ModelSpec).
for _module in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
