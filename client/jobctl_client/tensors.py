"""numpy <-> TensorProto without TensorFlow: strict, with errors that name the tensor.

Both forms TensorFlow writes are read: `tensor_content` (raw little-endian bytes, what `tf.make_tensor_proto`
produces for numbers) and the typed `*_val` fields (what TF Serving's Predict answers in; TensorFlow's rule: fewer
values than elements repeat the last one). Arrays are written as `tensor_content`, the compact form. The functions take any
TensorProto message (jobctl_client's or TensorFlow's): they touch fields only, and DataType numbers are the wire's.
"""

from __future__ import annotations

import numpy as np

from jobctl_client.protos.tensorflow.core.framework import tensor_pb2, types_pb2

# DataType -> (numpy dtype on the wire, TensorProto field of typed values, TensorFlow's name)
DTYPES: dict[int, tuple[np.dtype, str, str]] = {
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
DT_STRING = types_pb2.DT_STRING
_BY_NUMPY = {np.dtype(v[0]).newbyteorder("="): k for k, v in DTYPES.items()}
MAX_ELEMENTS = 1 << 31


class TensorError(ValueError):
    """A TensorProto that cannot become an array (or an array that has no TensorProto form); the message names
    the tensor and what is wrong."""


def dtype_name(dtype: int) -> str:
    if dtype in DTYPES:
        return DTYPES[dtype][2]
    if dtype == DT_STRING:
        return "string"
    try:
        return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()
    except ValueError:
        return f"unknown dtype {dtype}"


def numpy_dtype(dtype: int) -> np.dtype:
    if dtype == DT_STRING:
        return np.dtype(object)
    if dtype not in DTYPES:
        raise TensorError(f"dtype {dtype_name(dtype)} is not supported")
    return DTYPES[dtype][0].newbyteorder("=")


def dtype_enum(dtype) -> int:
    d = np.dtype(dtype)
    if d.kind in "OSU":
        return DT_STRING
    d = d.newbyteorder("=")
    if d not in _BY_NUMPY:
        raise TensorError(f"numpy dtype {d} has no TensorProto equivalent supported here")
    return _BY_NUMPY[d]


def proto_shape(proto) -> list[int]:
    if proto.tensor_shape.unknown_rank:
        return []
    return [int(d.size) for d in proto.tensor_shape.dim]


def to_ndarray(proto, name: str = "tensor") -> np.ndarray:
    """Decode one TensorProto (strings: an object array of bytes); raises TensorError naming `name`."""
    shape = proto_shape(proto)
    if any(d < 0 for d in shape):
        raise TensorError(f"tensor {name!r}: shape {shape} has a negative dimension; a tensor needs a full shape")
    count = 1
    for d in shape:
        count *= d
        if count > MAX_ELEMENTS:
            raise TensorError(f"tensor {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
    if proto.dtype == DT_STRING:
        values = list(proto.string_val)
        if len(values) == 1 and count > 1:
            values = values * count
        if len(values) != count:
            raise TensorError(f"tensor {name!r}: shape {shape} has {count} elements, received {len(values)} strings")
        out = np.empty(count, dtype=object)
        out[:] = values
        return out.reshape(shape)
    if proto.dtype not in DTYPES:
        raise TensorError(f"tensor {name!r}: dtype {dtype_name(proto.dtype)} is not supported")
    np_dtype, field, _ = DTYPES[proto.dtype]
    if proto.tensor_content:
        expected = count * np_dtype.itemsize
        if len(proto.tensor_content) != expected:
            raise TensorError(f"tensor {name!r}: tensor_content has {len(proto.tensor_content)} bytes; shape {shape} of "
                              f"{dtype_name(proto.dtype)} needs {expected} bytes")
        return np.frombuffer(proto.tensor_content, dtype=np_dtype).reshape(shape).astype(np_dtype.newbyteorder("="))
    values = getattr(proto, field)
    n = len(values)
    if n == 0:
        if count == 0:
            return np.zeros(shape, dtype=np_dtype.newbyteorder("="))
        raise TensorError(f"tensor {name!r}: shape {shape} needs {count} values, received none")
    if proto.dtype == types_pb2.DT_HALF:
        flat = np.asarray(values, dtype=np.uint16).view(np.float16)
    else:
        try:
            flat = np.asarray(values).astype(np_dtype.newbyteorder("="), casting="unsafe")
        except (OverflowError, ValueError) as exc:
            raise TensorError(f"tensor {name!r}: values do not fit {dtype_name(proto.dtype)} ({exc})") from None
    if n == count:
        return flat.reshape(shape)
    if n < count:
        return np.concatenate([flat, np.full(count - n, flat[-1], dtype=flat.dtype)]).reshape(shape)
    raise TensorError(f"tensor {name!r}: shape {shape} has {count} elements, received {n} values")


def write_ndarray(proto, array, *, typed_fields: bool = False) -> object:
    """Fill `proto` in place (e.g. a request's map entry, with no intermediate message and CopyFrom): numbers as
    tensor_content (the compact form), or with `typed_fields` in their `*_val` field (what TF Serving answers
    Predict with); strings and bytes as string_val (UTF-8)."""
    array = np.asarray(array)
    enum = dtype_enum(array.dtype)
    proto.dtype = enum
    dims = proto.tensor_shape.dim
    for d in array.shape:
        dims.add().size = int(d)
    if enum == DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1))
        return proto
    little = array.astype(DTYPES[enum][0], copy=False)
    if typed_fields:
        flat = little.reshape(-1)
        if enum == types_pb2.DT_HALF:  # half_val holds the 16-bit patterns
            flat = flat.view(np.uint16)
        getattr(proto, DTYPES[enum][1]).extend(flat.tolist())
        return proto
    proto.tensor_content = np.ascontiguousarray(little).tobytes()
    return proto


def from_ndarray(array) -> tensor_pb2.TensorProto:
    """A new jobctl_client TensorProto holding `array`."""
    return write_ndarray(tensor_pb2.TensorProto(), array)
