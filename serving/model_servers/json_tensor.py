"""REST JSON <-> tensors and tf.Examples, as TF Serving's util/json_tensor.cc reads and writes them, with its
error texts: the row (`instances`) and columnar (`inputs`) formats, `{"b64": ...}` binary values, and the
`predictions` / `outputs` / `results` answers. Values are checked against the signature's dtypes here; shapes,
batch sizes and limits are then checked by validation.py, as for gRPC.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import grpc
import numpy as np

from serving.errors import ServingError
from serving.savedmodel import TensorInfo
from serving.tensors import dtype_name

_DEBUG_BYTES = 256  # TF Serving truncates JSON quoted in errors (kMaxJsonDebugStringBytes)
_INT32 = (-(2**31), 2**31 - 1)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def debug(val: Any) -> str:
    try:
        text = json.dumps(val, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        text = "<a value nested too deeply to quote>"
    return text[:_DEBUG_BYTES]


def json_type(val: Any) -> str:
    if val is None:
        return "Null"
    if val is True:
        return "True"
    if val is False:
        return "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(val), "Number")


def parse(body: bytes) -> dict:
    """ParseJson: a JSON object, or INVALID_ARGUMENT with where parsing stopped."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise invalid(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    except UnicodeDecodeError as exc:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {exc.start}") from None
    except RecursionError:
        raise invalid("JSON Parse error: the document nests too deeply") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {debug(doc)} Is not object")
    return doc


def signature_name(doc: dict) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {debug(doc)} not formatted correctly. 'signature_name' key must be a string value.")
    return name


def is_b64(val: Any) -> bool:
    return isinstance(val, dict) and len(val) == 1 and isinstance(val.get("b64"), str)


def b64decode(val: Any) -> bytes:
    if not is_b64(val):
        raise invalid(f"JSON Value: {debug(val)} not formatted correctly for base64 data")
    text = "".join(val["b64"].split())
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Unable to base64 decode") from None


# ------------------------------------------------------------------------------------------------ predict
def _dense_shape(val: Any) -> list[int]:
    shape = []
    while isinstance(val, list):
        shape.append(len(val))
        if not val:
            break
        val = val[0]
    return shape


def _type_error(val: Any, dtype: int) -> ServingError:
    return invalid(f"JSON Value: {debug(val)} Type: {json_type(val)} is not of expected type: {dtype_name(dtype)}")


_NP_TO_KIND = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def _accepts(val: Any, np_dtype: np.dtype) -> bool:
    """rapidjson's type test for one leaf: IsNumber for floats, IsInt/IsInt64/IsUint/IsUint64 for integers."""
    kind = np_dtype.kind
    if kind == "f":
        return isinstance(val, (int, float)) and not isinstance(val, bool)
    if kind == "b":
        return isinstance(val, bool)
    if not isinstance(val, int) or isinstance(val, bool):
        return False
    if np_dtype.itemsize <= 4 and kind == "i" or np_dtype.itemsize < 4:
        return _INT32[0] <= val <= _INT32[1]
    if kind == "i":
        return -(2**63) <= val < 2**63
    return 0 <= val < 2 ** (8 * np_dtype.itemsize)


def _fill(val: Any, level: int, shape: list[int], dtype: int, np_dtype: np.dtype, out: list) -> None:
    """FillTensorProto: every leaf at depth len(shape), every list the size of the first one at its level."""
    rank = len(shape)
    if not isinstance(val, list):
        if level != rank:
            raise invalid(f"JSON Value: {debug(val)} found at incorrect level: {level + 1} in the JSON DOM. Expected at level: {rank}")
        if isinstance(val, dict) or not _accepts(val, np_dtype):
            raise _type_error(val, dtype)
        out.append(val)
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(val)} at level: {level} expected size: {shape[level]}")
    for v in val:
        _fill(v, level + 1, shape, dtype, np_dtype, out)


def to_array(val: Any, info: TensorInfo) -> np.ndarray:
    """One JSON value as a tensor of the signature's dtype (shape taken from the first element at each level)."""
    if info.dtype == 7:  # DT_STRING: b64 objects or text, as TF Serving's string_val
        raise invalid(f"input {info.name!r}: string tensors are not supported by this server's Predict; send numbers")
    np_dtype = info.numpy_dtype
    shape = _dense_shape(val)
    if len(shape) > 64:  # numpy's limit (TensorFlow's is 254); no model input has such a rank
        raise invalid(f"input {info.name!r}: lists nested {len(shape)} deep; this server takes tensors of rank 64 at most")
    try:  # fast path: numpy reads a well-formed nested list at C speed; anything odd gets the exact check below
        arr = np.asarray(val)
        if arr.shape == tuple(shape) and _NP_TO_KIND.get(arr.dtype.kind) and (
            np_dtype.kind == "f" and arr.dtype.kind in "iuf" or arr.dtype.kind == np_dtype.kind == "b"
            or np_dtype.kind in "iu" and arr.dtype.kind in "iu" and (arr.size == 0 or all(_accepts(int(x), np_dtype) for x in (arr.min(), arr.max())))
        ):
            return arr.astype(np_dtype)
    except (ValueError, TypeError, OverflowError):
        pass
    flat: list = []
    _fill(val, 0, shape, info.dtype, np_dtype, flat)
    if np_dtype.kind == "f":  # a huge JSON integer becomes infinity, as rapidjson's GetFloat gives
        flat = [float(x) if not isinstance(x, int) or abs(x) < 2**1023 else math.copysign(math.inf, x) for x in flat]
        return np.asarray(flat, dtype=np.float64).astype(np_dtype).reshape(shape)
    # through int64 so that out-of-range values wrap as TF Serving's int_val does, never raise
    wide = np.uint64 if np_dtype == np.uint64 else np.int64 if np_dtype.kind != "b" else np.bool_
    return np.asarray(flat, dtype=wide).astype(np_dtype).reshape(shape)


def _instance_item(item: Any, name: str, inputs: dict[str, TensorInfo], seen: dict) -> np.ndarray:
    if name not in inputs:
        raise invalid(f"JSON object: does not have named input: {name}")
    arr = to_array(item, inputs[name])
    if name in seen:
        first = seen[name]
        if first.size != arr.size:
            raise invalid(f"Expecting tensor size: {first.size} but got: {arr.size}")
        if first.shape != arr.shape:
            raise invalid(f"Expecting shape [{','.join(map(str, first.shape))}] but got: [{','.join(map(str, arr.shape))}]")
    else:
        seen[name] = arr
    return arr


def _wrapped(prefix: str, exc: ServingError) -> ServingError:
    return invalid(f"{prefix} Error: INVALID_ARGUMENT: {exc.message}")


def _from_instances(instances: list, inputs: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(inputs) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors required as per tensorinfo_map")
    objects = isinstance(instances[0], dict) and not is_b64(instances[0])
    names = sorted(inputs)
    rows: dict[str, list] = {n: [] for n in names}
    seen: dict[str, np.ndarray] = {}
    for i, elem in enumerate(instances):
        elem_is_object = isinstance(elem, dict) and not is_b64(elem)
        if objects:
            if not elem_is_object:
                raise invalid(f"Expecting object but got list at item {i} of input list")
            for key, value in elem.items():
                try:
                    rows.setdefault(key, []).append(_instance_item(value, key, inputs, seen))
                except ServingError as exc:
                    raise _wrapped(f"Failed to process element: {i} key: {key} of 'instances' list.", exc) from None
            if set(elem) != set(names):
                raise invalid(f"Failed to process element: {i} of 'instances' list. JSON object: {debug(elem)} keys must be equal to: {','.join(names)}")
        else:
            if elem_is_object:
                raise invalid(f"Expecting value/list but got object at item {i} of input list")
            try:
                rows[names[0]].append(_instance_item(elem, names[0], inputs, seen))
            except ServingError as exc:
                raise _wrapped(f"Failed to process element: {i} of 'instances' list.", exc) from None
    return {n: np.stack(rows[n]) for n in names if rows[n]}


def _from_inputs(val: Any, inputs: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    if not isinstance(val, dict) or is_b64(val):
        if len(inputs) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors required as per tensorinfo_map")
        name = next(iter(inputs))
        return {name: to_array(val, inputs[name])}
    out = {}
    for name in sorted(inputs):  # names the signature does not have are ignored, as by TF Serving
        if name not in val:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = to_array(val[name], inputs[name])
    return out


def predict_inputs(doc: dict, inputs: dict[str, TensorInfo], signature: str) -> tuple[dict[str, np.ndarray], str]:
    """(arrays by input name, "row" or "columnar") from a :predict body."""
    if not inputs:
        raise invalid(f"Failed to get input map for signature: {signature or 'DEFAULT'}")
    both = "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
    if "instances" in doc:
        if "inputs" in doc:
            raise invalid(f"JSON Value: {debug(doc)} {both}")
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {debug(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {debug(doc)} No values in 'instances' array")
        return _from_instances(instances, inputs), "row"
    if "inputs" in doc:
        return _from_inputs(doc["inputs"], inputs), "columnar"
    raise invalid("Missing 'inputs' or 'instances' key")


def _float_text(a: np.ndarray) -> list:
    """Floats as TF Serving writes them: the shortest text that reads back as the same float32 (0.1, not
    0.10000000149011612); NaN and Infinity as tokens (Python's json writes those)."""
    if a.dtype == np.float32:
        return [float(str(v)) for v in a.ravel()]
    return a.ravel().tolist()


def _values(name: str, a: np.ndarray) -> Any:
    if a.dtype == object:
        flat = [{"b64": base64.b64encode(v).decode()} if name.endswith("_bytes") else
                (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)) for v in a.ravel()]
    elif a.dtype.kind == "f":
        flat = _float_text(a)
    else:
        return a.tolist()
    if a.ndim == 0:
        return flat[0]
    box = np.empty(len(flat), dtype=object)
    box[:] = flat
    return box.reshape(a.shape).tolist()


def predict_answer(outputs: dict[str, np.ndarray], fmt: str) -> dict:
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == "columnar":
        if len(names) == 1:
            return {"outputs": _values(names[0], outputs[names[0]])}
        return {"outputs": {n: _values(n, outputs[n]) for n in names}}
    batch = -1
    for n in names:
        if outputs[n].ndim == 0:
            raise invalid(f"Tensor name: {n} has no shape information ")
        if batch >= 0 and outputs[n].shape[0] != batch:
            raise invalid(f"Tensor name: {n} has inconsistent batch size: {outputs[n].shape[0]} expecting: {batch}")
        batch = outputs[n].shape[0]
    columns = {n: _values(n, outputs[n]) for n in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(batch)]}


# ------------------------------------------------------------------------------------------------ examples
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_feature_value(val: Any, name: str, feature) -> None:
    kind = feature.WhichOneof("kind")

    def need(want: str):
        if kind not in (None, want):
            raise invalid(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}")

    if val is None or isinstance(val, list) or (isinstance(val, dict) and not is_b64(val)):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(val)}")
    if isinstance(val, bool):
        need("int64_list")
        feature.int64_list.value.append(int(val))
    elif isinstance(val, dict):
        need("bytes_list")
        feature.bytes_list.value.append(b64decode(val))
    elif isinstance(val, str):
        need("bytes_list")
        feature.bytes_list.value.append(val.encode())
    elif isinstance(val, float) or val >= 2**64 or val < -(2**63):  # rapidjson reads those as doubles
        need("float_list")
        feature.float_list.value.append(float(val))
    else:
        need("int64_list")
        if val >= 2**63:
            raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(val)


def fill_example(val: Any, example) -> None:
    if not isinstance(val, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(val)}")
    for name, content in val.items():
        feature = example.features.feature[name]
        for v in content if isinstance(content, list) else [content]:
            _add_feature_value(v, name, feature)


def fill_examples(doc: dict, request_input) -> None:
    """FillClassifyRegressRequestFromJson: `examples` (and an optional `context`) into an Input proto."""
    has_context = "context" in doc
    if has_context:
        fill_example(doc["context"], request_input.example_list_with_context.context)
    examples = doc.get("examples")
    if "examples" not in doc:
        # TF Serving says "classify" for :regress too; kept, so answers match word for word
        raise invalid(f"JSON Value: {debug(doc)} When method is classify, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {debug(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {debug(doc)} 'examples' value is an empty array")
    target = request_input.example_list_with_context.examples if has_context else request_input.example_list.examples
    for val in examples:
        fill_example(val, target.add())


def classify_answer(results: list[list[tuple[str, float]]]) -> dict:
    if not results:
        raise invalid("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[label, float(str(np.float32(score)))] for label, score in row] for row in results]}


def regress_answer(values: list[float]) -> dict:
    if not values:
        raise invalid("Cannot convert empty RegressionResults to JSON")
    return {"results": [float(str(np.float32(v))) for v in values]}
