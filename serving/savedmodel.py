"""Reading exported models: TF Serving's layout, jobctl.json, and the signatures a SavedModel declares.

Contract (docs/ARCHITECTURE.md): `<base>/<model_name>/<int version>/saved_model.pb`, signature
and tensor names from jobs.contract, plus `jobctl.json` beside saved_model.pb.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from jobs.contract import MODEL_METADATA_FILE as METADATA_FILE
from jobs.errors import BadInputError
PREDICT_METHOD = "tensorflow/serving/predict"


class ModelError(BadInputError):
    """A path that is not a usable exported model; the message names the path and what is missing."""


def integer_versions(base: Union[str, Path]) -> list[int]:
    """Integer sub-directories, ascending. Anything else (`.tmp-3-x`, `latest`) is ignored, as TF Serving does."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name))


def resolve_version_dir(path: Union[str, Path]) -> Path:
    """A version directory as given, or the latest version of a model base path."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = integer_versions(path)
    if versions:
        candidate = path / str(versions[-1])
        if (candidate / "saved_model.pb").is_file():
            return candidate
        raise ModelError(f"{path}: latest version {candidate.name} has no saved_model.pb (half-written?)")
    if not path.exists():
        raise ModelError(f"{path}: no such directory; expected a SavedModel version directory or a model base path")
    raise ModelError(
        f"{path}: expected a SavedModel (a directory with saved_model.pb) or a model base path holding integer "
        f"version directories; found neither"
    )


def read_metadata(version_dir: Union[str, Path]) -> dict:
    path = Path(version_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable metadata ({exc})") from None


def signature_def_map(version_dir: Union[str, Path]):
    """The SignatureDefs from saved_model.pb, exactly what TF Serving returns in GetModelMetadata."""
    from tensorflow.core.protobuf import saved_model_pb2

    from google.protobuf.message import DecodeError

    sm = saved_model_pb2.SavedModel()
    path = Path(version_dir) / "saved_model.pb"
    try:
        sm.ParseFromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise ModelError(f"{path}: not a readable SavedModel ({type(exc).__name__}: {exc})") from None
    out = {}
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags or len(sm.meta_graphs) == 1:
            for key, sig in mg.signature_def.items():
                out[key] = sig
            break
    return out


@dataclass
class TensorInfo:
    name: str  # the alias clients use
    dtype: int  # types_pb2 enum
    shape: Optional[list[int]]  # -1 for unknown dims; None for unknown rank

    @property
    def numpy_dtype(self) -> np.dtype:
        from serving.tensors import numpy_dtype

        return numpy_dtype(self.dtype)


@dataclass
class Signature:
    key: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    function: object = field(repr=False, default=None)  # the loaded ConcreteFunction


def _tensor_infos(mapping) -> dict[str, TensorInfo]:
    out = {}
    for alias, info in mapping.items():
        shape = None if info.tensor_shape.unknown_rank else [int(d.size) for d in info.tensor_shape.dim]
        out[alias] = TensorInfo(alias, int(info.dtype), shape)
    return out


@dataclass
class LoadedModel:
    path: Path
    module: object
    signatures: dict[str, Signature]
    signature_defs: dict
    metadata: dict

    @property
    def class_names(self) -> Optional[list[str]]:
        names = self.metadata.get("class_names")
        return list(names) if names else None


def load(version_dir: Union[str, Path]) -> LoadedModel:
    """Load a SavedModel version with its signatures; raises ModelError for anything unusable."""
    import tensorflow as tf

    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").is_file():
        raise ModelError(f"{version_dir}: no saved_model.pb")
    metadata = read_metadata(version_dir)
    defs = signature_def_map(version_dir)
    try:
        module = tf.saved_model.load(str(version_dir))
    except Exception as exc:  # TF raises many types for corrupt files
        raise ModelError(f"{version_dir}: cannot load SavedModel: {type(exc).__name__}: {exc}") from None
    signatures = {}
    for key, sig_def in defs.items():
        if key.startswith("__"):  # __saved_model_init_op and friends
            continue
        fn = module.signatures.get(key) if hasattr(module, "signatures") else None
        if fn is None:
            continue
        signatures[key] = Signature(key, sig_def.method_name, _tensor_infos(sig_def.inputs), _tensor_infos(sig_def.outputs), fn)
    if not signatures:
        raise ModelError(f"{version_dir}: the SavedModel declares no signatures")
    return LoadedModel(version_dir, module, signatures, defs, metadata)


def call(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    result = signature.function(**inputs)
    return {k: v.numpy() for k, v in result.items()}
