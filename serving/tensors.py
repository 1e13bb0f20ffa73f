"""TensorProto <-> numpy without TensorFlow's Python ops: strict, fast, and with errors that name the input.

`tf.make_ndarray` accepts inconsistent protos and fails deep inside TensorFlow; a server must instead answer
INVALID_ARGUMENT naming the tensor. Both the `tensor_content` (raw little-endian bytes, what TF Serving and
`tf.make_tensor_proto` produce for numbers) and the typed `*_val` fields are read, as TensorFlow does.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from jobs.errors import BadInputError

# DataType enum -> (numpy dtype, TensorProto field holding typed values, TensorFlow's name)
_DTYPES: dict[int, tuple[np.dtype, str, str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val", "float"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val", "double"),
    types_pb2.DT_HALF: (np.dtype("<f2"), "half_val", "half"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val", "int8"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val", "int16"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val", "int32"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val", "int64"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val", "uint8"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val", "uint16"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val", "bool"),
}
_BY_NUMPY = {np.dtype(v[0]).newbyteorder("="): k for k, v in _DTYPES.items()}
MAX_ELEMENTS = 1 << 31


class TensorError(BadInputError):
    """A TensorProto that cannot become an array; the message names the tensor and what is wrong."""


def dtype_name(dtype: int) -> str:
    if dtype in _DTYPES:
        return _DTYPES[dtype][2]
    if dtype == types_pb2.DT_STRING:
        return "string"
    try:
        return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()
    except ValueError:
        return f"unknown dtype {dtype}"


def numpy_dtype(dtype: int) -> np.dtype:
    if dtype not in _DTYPES:
        raise TensorError(f"dtype {dtype_name(dtype)} is not supported")
    return _DTYPES[dtype][0]


def dtype_enum(dtype) -> int:
    d = np.dtype(dtype).newbyteorder("=")
    if d not in _BY_NUMPY:
        raise TensorError(f"numpy dtype {d} has no TensorProto equivalent supported here")
    return _BY_NUMPY[d]


def proto_shape(proto: tensor_pb2.TensorProto) -> list[int]:
    if proto.tensor_shape.unknown_rank:
        return []
    return [int(d.size) for d in proto.tensor_shape.dim]


def to_ndarray(proto: tensor_pb2.TensorProto, name: str = "tensor") -> np.ndarray:
    """Decode one TensorProto; raises TensorError naming `name` for anything inconsistent."""
    if proto.dtype == types_pb2.DT_STRING:
        raise TensorError(f"input {name!r}: string tensors are not supported by image models; send numbers")
    if proto.dtype not in _DTYPES:
        raise TensorError(f"input {name!r}: dtype {dtype_name(proto.dtype)} is not supported")
    np_dtype, field, _ = _DTYPES[proto.dtype]
    shape = proto_shape(proto)
    if any(d < 0 for d in shape):
        raise TensorError(f"input {name!r}: shape {shape} has a negative dimension; a request tensor needs a full shape")
    count = 1
    for d in shape:
        count *= d
        if count > MAX_ELEMENTS:
            raise TensorError(f"input {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
    if proto.tensor_content:
        expected = count * np_dtype.itemsize
        if len(proto.tensor_content) != expected:
            raise TensorError(
                f"input {name!r}: tensor_content has {len(proto.tensor_content)} bytes; shape {shape} of "
                f"{dtype_name(proto.dtype)} needs {expected} bytes"
            )
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
    values = getattr(proto, field)
    n = len(values)
    if n == 0:
        if count == 0:
            return np.zeros(shape, dtype=np_dtype)
        raise TensorError(f"input {name!r}: shape {shape} needs {count} values, received none")
    if proto.dtype == types_pb2.DT_HALF:
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        try:
            flat = np.asarray(values).astype(np_dtype, casting="unsafe")
        except (OverflowError, ValueError) as exc:
            raise TensorError(f"input {name!r}: values do not fit {dtype_name(proto.dtype)} ({exc})") from None
    if n == count:
        return flat.reshape(shape)
    if n < count:
        # TensorFlow's rule: fewer values than elements repeats the last one (a scalar fill is the common case).
        return np.concatenate([flat, np.full(count - n, flat[-1], dtype=flat.dtype)]).reshape(shape)
    raise TensorError(f"input {name!r}: shape {shape} has {count} elements, received {n} values")


def write_ndarray(proto: tensor_pb2.TensorProto, array: np.ndarray) -> tensor_pb2.TensorProto:
    """Fill `proto` in place (e.g. a response's map entry: no intermediate message and CopyFrom) with
    tensor_content, the compact form TF Serving sends back."""
    array = np.asarray(array)
    enum = dtype_enum(array.dtype)
    little = array.astype(_DTYPES[enum][0], copy=False)
    proto.dtype = enum
    dims = proto.tensor_shape.dim
    for d in array.shape:
        dims.add().size = int(d)
    proto.tensor_content = np.ascontiguousarray(little).tobytes()
    return proto


def from_ndarray(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode with tensor_content (compact, what TF Serving sends back)."""
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
