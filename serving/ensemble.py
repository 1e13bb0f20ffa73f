"""Fuse K exported classifiers into one SavedModel whose `serving_default` averages their probabilities.

TF Serving has no ensembles; one SavedModel whose signature runs every member keeps a single round trip and the
stock Predict API (docs/serving.md). The members' own serving functions are embedded unchanged, so each member
keeps its preprocessing (rescaling, standardization) and all take the same raw pixels.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from jobs.contract import (CLASS_NAMES_ASSET, INPUT_NAME, MODEL_METADATA_FILE, OUTPUT_CLASS_IDS,
                           OUTPUT_PROBABILITIES, SIGNATURE_NAME)
from jobs.errors import BadInputError
from serving.savedmodel import ModelError, integer_versions, read_metadata, resolve_version_dir

MEMBER_PROBABILITIES = "member_probabilities"
CLASS_NAMES_SIGNATURE = "class_names"


class EnsembleError(BadInputError):
    """Members that cannot be fused; the message names the member and the mismatch."""


@dataclass
class Member:
    path: Path  # the version directory
    input_shape: list[int]
    input_dtype: str
    class_names: Optional[list[str]]
    num_classes: int
    metadata: dict


def resolve_members(paths_or_sweep: Union[str, Path, Sequence[Union[str, Path]]], top: Optional[int] = None) -> list[Path]:
    """Export paths -> version directories. A sweep directory (it holds `leaderboard.json`) expands to its best
    `top` succeeded trials, read by sweeps.leaderboard (pruned, stopped and failed trials never become members)."""
    from sweeps.errors import SweepError
    from sweeps.leaderboard import is_sweep_dir, sweep_exports

    items = [paths_or_sweep] if isinstance(paths_or_sweep, (str, Path)) else list(paths_or_sweep)
    out: list[Path] = []
    for item in items:
        item = Path(item)
        if is_sweep_dir(item):
            try:
                exports = sweep_exports(item)
            except SweepError as exc:
                raise EnsembleError(str(exc)) from None
            k = top or len(exports)
            if k > len(exports):
                raise EnsembleError(f"--top {k}: the sweep {item} has only {len(exports)} exported trials")
            out.extend(resolve_version_dir(p) for p in exports[:k])
        else:
            try:
                out.append(resolve_version_dir(item))
            except ModelError as exc:
                raise EnsembleError(str(exc)) from None
    if top is not None and len(out) > top and not any(is_sweep_dir(i) for i in items):
        out = out[:top]
    return out


def _signature_io(version_dir: Path):
    from serving.savedmodel import signature_def_map
    from serving.tensors import numpy_dtype

    defs = signature_def_map(version_dir)
    if SIGNATURE_NAME not in defs:
        raise EnsembleError(
            f"member {version_dir}: no {SIGNATURE_NAME!r} signature; found {sorted(k for k in defs if not k.startswith('__'))}"
        )
    sig = defs[SIGNATURE_NAME]
    if list(sig.inputs) != [INPUT_NAME]:
        raise EnsembleError(f"member {version_dir}: expected one input {INPUT_NAME!r}, found inputs {sorted(sig.inputs)}")
    if OUTPUT_PROBABILITIES not in sig.outputs:
        raise EnsembleError(f"member {version_dir}: expected an output 'probabilities', found {sorted(sig.outputs)}")
    info = sig.inputs[INPUT_NAME]
    shape = [int(d.size) for d in info.tensor_shape.dim][1:]
    probs = sig.outputs[OUTPUT_PROBABILITIES]
    classes = int(probs.tensor_shape.dim[-1].size) if probs.tensor_shape.dim else -1
    return shape, numpy_dtype(info.dtype).name, classes


def inspect_member(path: Union[str, Path]) -> Member:
    try:
        version_dir = resolve_version_dir(path)
        shape, dtype, classes = _signature_io(version_dir)
        meta = read_metadata(version_dir)
    except ModelError as exc:
        raise EnsembleError(f"member {path}: {exc}") from None
    names = meta.get("class_names")
    if meta.get("input_shape") and list(meta["input_shape"]) != shape:
        raise EnsembleError(
            f"member {version_dir}: {MODEL_METADATA_FILE} says input_shape {meta['input_shape']}, the signature says {shape}"
        )
    if classes < 0 and names:
        classes = len(names)
    return Member(version_dir, shape, dtype, list(names) if names else None, classes, meta)


def check_compatible(members: Sequence[Member]) -> None:
    if len(members) < 1:
        raise EnsembleError("an ensemble needs at least one member; received none")
    ref = members[0]
    for m in members[1:]:
        if m.input_shape != ref.input_shape:
            raise EnsembleError(
                f"member {m.path}: input shape {m.input_shape} differs from {ref.input_shape} of member {ref.path}; "
                "all members must take the same images"
            )
        if m.input_dtype != ref.input_dtype:
            raise EnsembleError(
                f"member {m.path}: input dtype {m.input_dtype} differs from {ref.input_dtype} of member {ref.path}"
            )
        if m.num_classes != ref.num_classes:
            raise EnsembleError(
                f"member {m.path}: {m.num_classes} classes, but member {ref.path} has {ref.num_classes}"
            )
        if m.class_names and ref.class_names and m.class_names != ref.class_names:
            diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(m.class_names, ref.class_names)) if a != b]
            raise EnsembleError(
                f"member {m.path}: class names differ from member {ref.path} at {', '.join(diff[:5])}; "
                "members must predict the same classes in the same order"
            )


def _normalized_weights(weights: Optional[Sequence[float]], n: int) -> list[float]:
    if weights is None or len(weights) == 0:
        return [1.0 / n] * n
    if len(weights) != n:
        raise EnsembleError(f"--weights: expected {n} weights (one per member), received {len(weights)}: {list(weights)}")
    if any(not (w >= 0) for w in weights) or sum(weights) <= 0:
        raise EnsembleError(f"--weights: expected non-negative numbers with a positive sum, received {list(weights)}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def build_ensemble(
    members: Sequence[Union[str, Path]],
    output_base: Union[str, Path],
    *,
    weights: Optional[Sequence[float]] = None,
    include_member_probabilities: bool = True,
    version: Optional[int] = None,
    model_name: Optional[str] = None,
) -> Path:
    """Write `<output_base>/<version>/` (next integer unless given) atomically; returns the version directory."""
    import tensorflow as tf

    infos = [inspect_member(m) for m in members]
    check_compatible(infos)
    w = _normalized_weights(weights, len(infos))
    ref = infos[0]
    class_names = next((m.class_names for m in infos if m.class_names), None) or [str(i) for i in range(ref.num_classes)]

    output_base = Path(output_base)
    output_base.mkdir(parents=True, exist_ok=True)
    existing = integer_versions(output_base)
    number = version if version is not None else (existing[-1] + 1 if existing else 1)
    if number in existing:
        raise EnsembleError(f"-o {output_base}: version {number} already exists; choose another --version")

    module = tf.Module()
    module.members = [tf.saved_model.load(str(m.path)) for m in infos]
    weights_t = tf.constant(w, dtype=tf.float32)
    fns = [loaded.signatures[SIGNATURE_NAME] for loaded in module.members]
    spec = tf.TensorSpec([None, *ref.input_shape], tf.as_dtype(ref.input_dtype), name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(images):
        probs = tf.stack([tf.cast(fn(**{INPUT_NAME: images})[OUTPUT_PROBABILITIES], tf.float32) for fn in fns], axis=1)
        mean = tf.tensordot(probs, weights_t, axes=[[1], [0]])  # [batch, classes]
        out = {
            OUTPUT_PROBABILITIES: tf.identity(mean, name=OUTPUT_PROBABILITIES),
            OUTPUT_CLASS_IDS: tf.argmax(mean, axis=-1, output_type=tf.int64),
        }
        if include_member_probabilities:
            out[MEMBER_PROBABILITIES] = probs
        return out

    # A second signature so any TF Serving client can fetch the class names through Predict (no inputs).
    names_t = tf.constant(class_names)

    @tf.function(input_signature=[])
    def names():
        return {"class_names": tf.identity(names_t)}

    module.serve, module.names = serve, names
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{number}-", dir=output_base))
    try:
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: serve, CLASS_NAMES_SIGNATURE: names})
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / CLASS_NAMES_ASSET).write_text("\n".join(class_names) + "\n")
        meta = {
            "model_name": model_name or output_base.name,
            "version": number,
            "ensemble": True,
            "members": [
                {"path": str(m.path.resolve()), "weight": wi, "model_name": m.metadata.get("model_name"),
                 "version": m.metadata.get("version"), "metrics": m.metadata.get("metrics")}
                for m, wi in zip(infos, w)
            ],
            "class_names": class_names,
            "input_name": INPUT_NAME,
            "input_shape": ref.input_shape,
            "input_dtype": ref.input_dtype,
            "pixel_max": ref.metadata.get("pixel_max"),
            "outputs": {
                OUTPUT_PROBABILITIES: "float32 [batch, classes] (weighted mean of members)",
                OUTPUT_CLASS_IDS: "int64 [batch]",
                **({MEMBER_PROBABILITIES: "float32 [batch, members, classes]"} if include_member_probabilities else {}),
            },
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        # The whole version directory is renamed into place below: no file in it needs its own atomic write.
        (tmp / MODEL_METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        final = output_base / str(number)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the serving user must read it
        os.rename(tmp, final)  # atomic; fails if a concurrent writer took the number
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
