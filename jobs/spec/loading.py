"""Loading: YAML in, every problem reported at once with its field path; --set overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from jobs.errors import BadInputError
from jobs.spec.job import JobSpec


# ------------------------------------------------------------------------------------------ loading & errors
class SpecError(BadInputError):
    """Every problem found in a spec; `str()` prints one line per problem."""

    def __init__(self, problems: list[str], source: str = "spec"):
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


def _allowed_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk the model along `loc` (minus the offending key) to list the keys that are allowed there."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = first_model(ann)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def first_model(annotation) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = first_model(arg)
        if found is not None:
            return found
    return None


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_exactly_one(), ValidationSplit]",) or "function-" in str(part):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe_error(err: dict, model: type[BaseModel]) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("function-" in p or p.startswith("literal["))))
    # Union members add their type name to the location (e.g. "int", "list[...]"): drop those segments.
    loc = tuple(p for p in loc if not (isinstance(p, str) and (p in ("int", "float", "str", "bool") or "[" in p)))
    path = _format_loc(loc)
    received = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, loc)
        key = loc[-1] if loc else "?"
        hint = difflib.get_close_matches(str(key), allowed, n=1) or [
            a for a in (_ALIASES.get(str(key)),) if a in allowed
        ]
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{path}: unknown field{did_you_mean}; expected one of: {', '.join(allowed)}"
    if kind == "missing":
        return f"{path}: required field is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind.startswith("literal_error"):
        msg = "expected " + msg.removeprefix("Input should be ")
    elif msg.startswith("Input should be "):
        msg = "expected " + msg.removeprefix("Input should be ")
    if "received" in msg or isinstance(received, dict):
        return f"{path}: {msg}"
    return f"{path}: {msg}; received {received!r}"


# Names users bring from notebooks and Keras arguments.
_ALIASES = {"lr": "learning_rate", "batch": "batch_size", "epoch": "epochs", "optim": "optimizer",
            "filters": "conv_filters", "units": "dense_units", "dropout_rate": "dropout", "validation_split": "validation"}


def validation_problems(exc: ValidationError, model: type[BaseModel] = JobSpec) -> list[str]:
    seen, problems = set(), []
    for err in exc.errors(include_url=False):
        text = _describe_error(err, model)
        if text not in seen:
            seen.add(text)
            problems.append(text)
    return problems


_SWEEP_ONLY_FIELDS = ("base", "parameters", "objective", "algorithm")


def parse_spec(data: Any, source: str = "spec") -> JobSpec:
    if data is None:
        raise SpecError(["(top level): the spec is empty; expected a mapping of fields (name, data, model, training, "
                         "...; `jobctl init` writes a commented one)"], source)
    if not isinstance(data, dict):
        raise SpecError([f"(top level): expected a mapping of fields, received {type(data).__name__}"], source)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        sweep_fields = [f for f in _SWEEP_ONLY_FIELDS if f in data]
        if len(sweep_fields) >= 2 and "model" not in data:
            problems.insert(0, f"(top level): this is a sweep spec (it has {', '.join(sweep_fields)}), not a job "
                               "spec: run it with `jobctl sweep`")
        raise SpecError(problems, source) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the last one silently, so
    a pasted `learning_rate:` line would override the first without a word."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Union[str, Path]) -> Any:
    path = Path(path)
    if path.is_dir():
        raise SpecError([f"{str(path)!r} is a directory; expected a YAML file"], str(path))
    if not path.is_file():
        raise SpecError([f"file not found: {str(path)!r}"], str(path))
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"], str(path)) from None


def load_spec(path: Union[str, Path], overrides: Optional[dict[str, Any]] = None) -> JobSpec:
    """Read, apply dotted-path overrides (e.g. {'training.learning_rate': 0.01}), validate."""
    data = read_yaml(path)
    if overrides:
        if not isinstance(data, dict):
            data = {}
        data = apply_overrides(data, overrides)
    return parse_spec(data, str(path))


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Return a copy of `data` with each dotted path set; intermediate mappings are created as needed."""
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def parse_override_pairs(pairs: list[str]) -> dict[str, Any]:
    """`--set FIELD.PATH=VALUE` pairs -> {path: value}; values are YAML, so numbers and lists keep their type."""
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        if "=" not in pair:
            problems.append(f"--set expects FIELD.PATH=VALUE, received {pair!r}")
            continue
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problems.append(f"--set {key}: value {raw!r} is not valid YAML ({getattr(exc, 'problem', exc)})")
    if problems:
        raise SpecError(problems, "--set")
    return out


def field_exists(dotted: str) -> bool:
    """True when `dotted` names a field of JobSpec (used to reject unknown sweep parameters early)."""
    current: Any = JobSpec
    for part in dotted.split("."):
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return False
        nxt = first_model(fields[part].annotation)
        current = nxt if nxt is not None else None
    return True
