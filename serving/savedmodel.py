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


def version_dirs(base: Union[str, Path]) -> dict[int, Path]:
    """Integer sub-directories by version number, ascending. A name may be zero-padded (`00000123` is version 123,
    as TF Serving reads it); anything else (`.tmp-3-x`, `latest`) is ignored, as TF Serving does."""
    base = Path(base)
    if not base.is_dir():
        return {}
    found: dict[int, Path] = {}
    for p in sorted(base.iterdir(), key=lambda q: q.name):
        if p.is_dir() and re.fullmatch(r"\d+", p.name):
            found.setdefault(int(p.name), p)  # `7` and `007` both: the first by name, every poll the same
    return dict(sorted(found.items()))


def integer_versions(base: Union[str, Path]) -> list[int]:
    """Version numbers under a base path, ascending (see version_dirs)."""
    return list(version_dirs(base))


def resolve_version_dir(path: Union[str, Path]) -> Path:
    """A version directory as given, or the latest version of a model base path."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = version_dirs(path)
    if versions:
        candidate = versions[max(versions)]
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


def _serving_meta_graph(version_dir: Union[str, Path]):
    """The MetaGraphDef TF Serving loads: the one tagged `serve` (or the only one)."""
    from tensorflow.core.protobuf import saved_model_pb2

    from google.protobuf.message import DecodeError

    sm = saved_model_pb2.SavedModel()
    path = Path(version_dir) / "saved_model.pb"
    try:
        sm.ParseFromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise ModelError(f"{path}: not a readable SavedModel ({type(exc).__name__}: {exc})") from None
    for mg in sm.meta_graphs:
        if "serve" in mg.meta_info_def.tags or len(sm.meta_graphs) == 1:
            return mg
    return None


def signature_def_map(version_dir: Union[str, Path]):
    """The SignatureDefs from saved_model.pb, exactly what TF Serving returns in GetModelMetadata."""
    mg = _serving_meta_graph(version_dir)
    return dict(mg.signature_def.items()) if mg is not None else {}


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
    """Load a SavedModel version with its signatures; raises ModelError for anything unusable.

    A TF2 SavedModel (one with an object graph: Keras, tf.Module) is loaded with tf.saved_model.load. A TF1 one
    (graph and signatures only) runs in a TF1 session, as TF Serving runs every model: tf.saved_model.load would
    re-check each signature's declared shapes against the graph and refuse models TF Serving serves (upstream's
    half_plus_three declares a rank its graph does not have)."""
    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").is_file():
        raise ModelError(f"{version_dir}: no saved_model.pb")
    metadata = read_metadata(version_dir)
    mg = _serving_meta_graph(version_dir)
    defs = dict(mg.signature_def.items()) if mg is not None else {}
    tf1 = mg is not None and not mg.object_graph_def.nodes
    try:
        module, functions = _load_tf1(version_dir, mg, defs) if tf1 else _load_tf2(version_dir)
    except ModelError:
        raise
    except Exception as exc:  # TF raises many types for corrupt files
        raise ModelError(f"{version_dir}: cannot load SavedModel: {type(exc).__name__}: {exc}") from None
    signatures = {}
    for key, sig_def in defs.items():
        if key.startswith("__"):  # __saved_model_init_op and friends
            continue
        fn = functions.get(key)
        if fn is None:
            continue
        signatures[key] = Signature(key, sig_def.method_name, _tensor_infos(sig_def.inputs), _tensor_infos(sig_def.outputs), fn)
    if not signatures:
        raise ModelError(f"{version_dir}: the SavedModel declares no signatures")
    return LoadedModel(version_dir, module, signatures, defs, metadata)


def _load_tf2(version_dir: Path):
    import tensorflow as tf

    module = tf.saved_model.load(str(version_dir))
    return module, dict(module.signatures) if hasattr(module, "signatures") else {}


def _load_tf1(version_dir: Path, mg, defs: dict):
    """A TF1 SavedModel in its own graph and session; each signature becomes a callable fed by tensor name.
    Feeds are not checked against the placeholders' static shapes, as in TF Serving's C++ session."""
    import tensorflow as tf

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    from tensorflow.python.util import deprecation

    # The loader's deprecation notice ("use tf.saved_model.load instead") is the advice this path exists to ignore.
    with graph.as_default(), deprecation.silence():
        tf.compat.v1.saved_model.loader.load(session, list(mg.meta_info_def.tags), str(version_dir))
    functions = {}
    for key, sig_def in defs.items():
        if key.startswith("__"):
            continue
        try:
            feeds = {alias: graph.get_tensor_by_name(info.name) for alias, info in sig_def.inputs.items()}
            fetches = {alias: graph.get_tensor_by_name(info.name) for alias, info in sig_def.outputs.items()}
        except (KeyError, ValueError) as exc:
            raise ModelError(f"{version_dir}: signature {key!r} names a tensor the graph lacks: {exc}") from None
        functions[key] = _SessionSignature(session, feeds, fetches)
    return session, functions


class _SessionSignature:
    """Runs one TF1 signature: keyword arrays in, a dict of arrays out (session.run is thread-safe)."""

    def __init__(self, session, feeds: dict, fetches: dict):
        from tensorflow.core.protobuf import config_pb2

        self._in, self._out = sorted(feeds), sorted(fetches)
        # A CallableOptions callable runs in C++ like TF Serving's Session::Run; session.run and make_callable
        # would first refuse, in Python, any feed whose shape differs from the placeholder's declared one.
        options = config_pb2.CallableOptions(feed=[feeds[a].name for a in self._in], fetch=[fetches[a].name for a in self._out])
        self._run = session._make_callable_from_options(options)

    def __call__(self, **inputs):
        return dict(zip(self._out, self._run(*[inputs[a] for a in self._in])))


def call(signature: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a signature. A TF1 one runs as TF Serving runs it, whatever shapes the signature declares; a TF2 one
    refuses shapes its function was not traced for (TypeError): calling its graph with others anyway can abort
    the process inside TensorFlow (a kernel CHECK), which no request may do."""
    fn = signature.function
    if isinstance(fn, _SessionSignature):
        return {k: np.asarray(v) for k, v in fn(**inputs).items()}
    return {k: v.numpy() for k, v in fn(**inputs).items()}
