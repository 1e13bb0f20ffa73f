"""TensorProto <-> numpy for the server: jobctl_client.tensors' codec (no TensorFlow ops), with its errors as
jobctl's BadInputError so that a bad request tensor becomes INVALID_ARGUMENT naming the input.

`tf.make_ndarray` accepts inconsistent protos and fails deep inside TensorFlow; a server must instead answer
INVALID_ARGUMENT naming the tensor. Both the `tensor_content` and the typed `*_val` fields are read, as TensorFlow
does. Image models take numbers: a string tensor is refused here, though the client's codec reads one.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from tensorflow.core.framework import tensor_pb2

from jobctl_client import tensors as _codec
from jobctl_client.tensors import MAX_ELEMENTS, dtype_name, proto_shape  # noqa: F401 (re-exported)
from jobs.errors import BadInputError


class TensorError(BadInputError):
    """A TensorProto that cannot become an array; the message names the tensor and what is wrong."""


def numpy_dtype(dtype: int) -> np.dtype:
    if dtype not in _codec.DTYPES:
        raise TensorError(f"dtype {dtype_name(dtype)} is not supported")
    return _codec.DTYPES[dtype][0]


def dtype_enum(dtype) -> int:
    try:
        return _codec.dtype_enum(dtype)
    except _codec.TensorError as exc:
        raise TensorError(str(exc)) from None


def to_ndarray(proto: tensor_pb2.TensorProto, name: str = "tensor") -> np.ndarray:
    """Decode one TensorProto; raises TensorError naming `name` for anything inconsistent."""
    if proto.dtype == _codec.DT_STRING:
        raise TensorError(f"input {name!r}: string tensors are not supported by image models; send numbers")
    try:
        return _codec.to_ndarray(proto, name)
    except _codec.TensorError as exc:
        raise TensorError(str(exc).replace("tensor ", "input ", 1)) from None


def write_ndarray(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Fill `proto` in place (e.g. a request's map entry: no intermediate message and CopyFrom) with
    tensor_content, the compact form (responses use write_ndarray_fields, as TF Serving answers)."""
    try:
        return _codec.write_ndarray(proto, array)
    except _codec.TensorError as exc:
        raise TensorError(str(exc)) from None


def write_ndarray_fields(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Fill `proto` in place with the typed `*_val` field, as TF Serving answers Predict (Tensor::AsProtoField,
    its default): clients that read `outputs['y'].float_val` get their values, as from TF Serving."""
    try:
        return _codec.write_ndarray(proto, array, typed_fields=True)
    except _codec.TensorError as exc:
        raise TensorError(str(exc)) from None


def from_ndarray(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode with tensor_content (compact; what a request may carry) into TensorFlow's own TensorProto."""
    return write_ndarray(tensor_pb2.TensorProto(), array)


def format_shape(shape: Optional[list]) -> str:
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join("?" if d is None or d < 0 else str(d) for d in shape) + "]"


def _fits(want: list, got: tuple) -> bool:
    return len(want) == len(got) and all(w is None or w < 0 or w == g for w, g in zip(want, got))


def shape_mismatch(name: str, want: Optional[list], got: tuple) -> Optional[str]:
    """None when `got` fits `want` (-1: any size); else an error naming both shapes, with a hint when the fix is
    plain: one example sent without its batch dimension, or grayscale images without their channel axis."""
    if want is None or _fits(want, got):
        return None
    message = f"input {name!r}: expected shape {format_shape(want)}, received {format_shape(list(got))}"
    if len(got) == len(want) - 1 and _fits(want[1:], got):
        message += " (one example: add the batch dimension)"
    elif len(got) == len(want) - 1 and want[-1] == 1 and _fits(want[:-1], got):
        message += " (images without their channel axis: add a last dimension of size 1)"
    return message
