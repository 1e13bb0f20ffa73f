"""Classify and Regress over tf.Examples (TF Serving's classifier.cc, regressor.cc and util.cc), shared by gRPC and
REST: the request's Examples become one DT_STRING tensor of serialized Examples (context bytes first, so its
features merge into each Example, as TF Serving concatenates them) fed to a signature shaped as TF Serving expects
(input `inputs`; outputs `classes`/`scores` or `outputs`), whatever its method_name unless the method check is on.

jobctl's image models export a predict signature; Classify on such a signature keeps jobctl's extension: an
Example's `images` feature holds one image's raw pixels, and the classes are the model's class names.
"""

from __future__ import annotations

import grpc
import numpy as np

from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES
from serving import savedmodel
from serving.errors import ServingError
from serving.savedmodel import Signature
from serving.tensors import format_shape

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def examples_of(request_input) -> list:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        return list(request_input.example_list.examples)
    if kind == "example_list_with_context":
        return list(request_input.example_list_with_context.examples)
    return []


def serialized_examples(request_input) -> np.ndarray:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        out = [ex.SerializeToString() for ex in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = request_input.example_list_with_context.context.SerializeToString()
        out = [ctx + ex.SerializeToString() for ex in request_input.example_list_with_context.examples]
    else:
        out = []
    if not out:
        raise _invalid("Input is empty.")
    return np.array(out, dtype=object)


def _run(sig: Signature, feeds: dict, served, deadline):
    batcher = served.batchers.get(sig.key)
    if batcher is not None and all(a.dtype != object for a in feeds.values()):
        rows = len(next(iter(feeds.values())))
        return batcher.submit(feeds, rows, deadline)
    return savedmodel.call(sig, feeds)


def _method_error(kind: str, want: str, sig: Signature) -> ServingError:
    return _invalid(f"Expected {kind} signature method_name to be {want}. Was: {sig.method_name}")


def classify(sig: Signature, served, request_input, max_rows: int, deadline=None,
             method_check: bool = False) -> list[list[tuple[str, float]]]:
    """One list of (label, score) per Example. `method_check`: TF Serving's --enable_signature_method_name_check
    (off by default there too: TF2 exports mark every signature tensorflow/serving/predict, and TF Serving then
    classifies with any signature shaped like a classifier's)."""
    if sig.method_name != CLASSIFY_METHOD:
        if list(sig.inputs) == [INPUT_NAME] and OUTPUT_PROBABILITIES in sig.outputs:
            return _classify_images(sig, served, request_input, max_rows, deadline)
        if method_check:
            raise _method_error("classification", CLASSIFY_METHOD, sig)
    if len(sig.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(sig.outputs) not in (1, 2):
        raise _invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if "inputs" not in sig.inputs:
        raise _invalid(f"No classification inputs found in SignatureDef: inputs {sorted(sig.inputs)}")
    if "classes" not in sig.outputs and "scores" not in sig.outputs:
        raise _invalid(f'Expected classification signature outputs to contain at least one of "classes" or "scores". '
                       f"Signature was: outputs {sorted(sig.outputs)}")
    examples = serialized_examples(request_input)
    _check_rows(len(examples), max_rows)
    out = _run(sig, {"inputs": examples}, served, deadline)
    n = len(examples)
    classes, scores = out.get("classes"), out.get("scores")
    for name, t, kind in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if t is None:
            continue
        if t.ndim != 2:
            raise _invalid(f"Expected Tensor shape: [batch_size num_classes] but got {format_shape(list(t.shape))}")
        if (kind == "DT_STRING") != (t.dtype == object):
            raise _invalid(f"Expected {name} Tensor of {kind}. Got: {t.dtype}")
        if t.shape[0] != n:
            raise _invalid(f"Expected {name} output batch size of {n}. Got: {t.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise _invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]
    results = []
    for i in range(n):
        row = []
        for j in range(width):
            label = classes[i, j] if classes is not None else b""
            label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            row.append((label, float(scores[i, j]) if scores is not None else 0.0))
        results.append(row)
    return results


def regress(sig: Signature, served, request_input, max_rows: int, deadline=None, method_check: bool = False) -> list[float]:
    """One value per Example; `method_check` as in classify."""
    if method_check and sig.method_name != REGRESS_METHOD:
        raise _method_error("regression", REGRESS_METHOD, sig)
    if len(sig.inputs) != 1:
        raise _invalid("Expected one input Tensor.")
    if len(sig.outputs) != 1:
        raise _invalid("Expected one output Tensor.")
    if "inputs" not in sig.inputs:
        raise _invalid(f"No regression inputs found in SignatureDef: inputs {sorted(sig.inputs)}")
    if "outputs" not in sig.outputs:
        raise _invalid(f"No regression outputs found in SignatureDef: outputs {sorted(sig.outputs)}")
    examples = serialized_examples(request_input)
    _check_rows(len(examples), max_rows)
    t = _run(sig, {"inputs": examples}, served, deadline)["outputs"]
    n = len(examples)
    if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        raise _invalid(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {format_shape(list(t.shape))}")
    if t.shape[0] != n:
        raise _invalid(f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
    if t.dtype != np.float32:
        raise _invalid(f"Expected output Tensor of DT_FLOAT.  Got: {t.dtype}")
    return [float(v) for v in t.reshape(-1)]


def _check_rows(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise _invalid(f"batch of {n} examples is above this server's limit of {max_rows} (--max-request-batch-size); split the request")


def _classify_images(sig: Signature, served, request_input, max_rows: int, deadline) -> list[list[tuple[str, float]]]:
    """jobctl's extension: feature `images` holds an image's raw pixels (one bytes value, an int64 or a float list)."""
    ti = sig.inputs[INPUT_NAME]
    shape, np_dtype = ti.shape[1:], ti.numpy_dtype
    size = int(np.prod(shape))
    images = []
    kind = request_input.WhichOneof("kind")
    context = request_input.example_list_with_context.context if kind == "example_list_with_context" else None
    for i, ex in enumerate(examples_of(request_input)):
        feat = ex.features.feature.get(INPUT_NAME)
        if feat is None and context is not None:
            feat = context.features.feature.get(INPUT_NAME)
        if feat is None:
            raise _invalid(f"example {i}: missing feature {INPUT_NAME!r}")
        which = feat.WhichOneof("kind")
        if which == "bytes_list" and len(feat.bytes_list.value) == 1:
            flat = np.frombuffer(feat.bytes_list.value[0], dtype=np.uint8)
        elif which == "int64_list":
            flat = np.asarray(feat.int64_list.value)
        elif which == "float_list":
            flat = np.asarray(feat.float_list.value)
        else:
            raise _invalid(f"example {i}: feature {INPUT_NAME!r} is empty or has several byte strings")
        if flat.size != size:
            raise _invalid(f"example {i}: feature {INPUT_NAME!r} has {flat.size} values; shape {format_shape(shape)} needs {size}")
        images.append(flat.astype(np_dtype).reshape(shape))
    if not images:
        raise _invalid("empty batch: the request holds 0 examples; send at least one")
    batch = np.stack(images)
    _check_rows(len(batch), max_rows)
    probs = _run(sig, {INPUT_NAME: batch}, served, deadline)[OUTPUT_PROBABILITIES]
    names = served.model.class_names or [str(i) for i in range(probs.shape[-1])]
    return [[(name, float(score)) for name, score in zip(names, row)] for row in probs]
