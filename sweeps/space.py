"""The search space: each parameter of a sweep as a typed range or choice, parsed from the sweep spec's
`parameters` mapping, and the values a grid or a boundary check takes from it (Optuna draws the others:
sweeps/study.py).

Apart from the sweep spec (sweeps/spec.py reads it; it reads nothing of the spec) so that the two do not import
each other. No TensorFlow, no Optuna here.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any, Literal, Mapping, Optional, Union

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from jobs.spec import (
    JobSpec,
    StrictModel,
    field_exists,
    first_model,
    validation_problems,
)

_FLOAT_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def yaml_number(v: Any) -> Any:
    # PyYAML (YAML 1.1) reads `1e-3` as the string "1e-3"; everyone writes learning rates that way.
    if isinstance(v, str) and _FLOAT_STRING.fullmatch(v.strip()):
        return float(v)
    return v



class ChoiceParam(StrictModel):
    type: Literal["choice"] = "choice"
    values: list[Any]

    @field_validator("values")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("empty choice: expected at least one value, received []")
        return [yaml_number(x) for x in v]


# Range checks are field validators (each reads the fields validated before it, `info.data`), not a model
# validator: a model validator runs only once every field passed, so one bad field would hide the others.
def _empty_range(v, info: ValidationInfo, *, allow_equal: bool):
    lo = info.data.get("min")  # absent when min itself was rejected: that problem is reported instead
    if lo is not None and (lo > v or (lo == v and not allow_equal)):
        raise ValueError(f"empty range: received min {lo} {'>' if lo > v else '>='} max {v}; "
                         f"expected min {'<=' if allow_equal else '<'} max")
    return v


class IntParam(StrictModel):
    type: Literal["int"] = "int"
    min: int
    max: int
    step: int = Field(default=1, ge=1)
    scale: Literal["linear", "log"] = "linear"
    grid_points: Optional[int] = Field(default=None, ge=2, description="log scale in a grid: how many values")

    @field_validator("max")
    @classmethod
    def _range(cls, v, info: ValidationInfo):
        return _empty_range(v, info, allow_equal=True)

    @field_validator("scale")
    @classmethod
    def _log_min(cls, v, info: ValidationInfo):
        lo = info.data.get("min")
        if v == "log" and lo is not None and lo < 1:
            raise ValueError(f"log scale needs min >= 1, received min {lo}; expected min >= 1 or scale linear")
        return v


class FloatParam(StrictModel):
    type: Literal["float"] = "float"
    min: float
    max: float
    scale: Literal["linear", "log"] = "linear"
    grid_points: Optional[int] = Field(default=None, ge=2, description="grid search: evenly spaced values (on the scale)")

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, v, info: ValidationInfo):
        if not math.isfinite(v):
            raise ValueError(f"expected a finite number, received {v}")
        return _empty_range(v, info, allow_equal=False) if info.field_name == "max" else v

    @field_validator("scale")
    @classmethod
    def _log_min(cls, v, info: ValidationInfo):
        lo = info.data.get("min")
        if v == "log" and lo is not None and lo <= 0:
            raise ValueError(f"log scale needs min > 0, received min {lo}; expected min > 0 or scale linear")
        return v


Param = Union[ChoiceParam, IntParam, FloatParam]
_PARAM_TYPES = {"choice": ChoiceParam, "int": IntParam, "float": FloatParam}


def parse_parameters(raw: dict[str, Any], problems: list[str], algorithm: Optional[str] = None) -> dict[str, Param]:
    """Each parameter as its model; `algorithm` (when known) lets a range check what that search needs of it."""
    out: dict[str, Param] = {}
    if not raw:
        problems.append("parameters: expected at least one field path to search over, received none")
    reserved = {"name", "export.model_name", "labels"}
    for path, value in raw.items():
        where = f"parameters.{path}"
        if path in reserved:
            problems.append(f"{where}: set by the sweep for every trial (each trial has its own name); received a parameter over it")
            continue
        if not field_exists(path):
            from difflib import get_close_matches

            hint = get_close_matches(path, all_field_paths(), n=1)
            problems.append(f"{where}: unknown job spec field" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                            + "; expected a dotted path such as training.learning_rate")
            continue
        if isinstance(value, list):
            value = {"type": "choice", "values": value}
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a list of values or a mapping (values | min, max[, step, scale, "
                            f"grid_points]), received {value!r}")
            continue
        value = {k: yaml_number(v) if k in ("min", "max") else v for k, v in value.items()}
        kind = value.get("type")
        if kind is None:
            if "values" in value:
                kind = "choice"
            elif "step" in value or all(isinstance(value.get(k), int) and not isinstance(value.get(k), bool)
                                        for k in ("min", "max")):
                kind = "int"
            else:
                kind = "float"
        cls = _PARAM_TYPES.get(kind)
        if cls is None:
            problems.append(f"{where}.type: expected one of choice, int, float, received {kind!r}")
            continue
        try:
            out[path] = cls.model_validate({**value, "type": kind})
        except ValidationError as exc:
            # Worded as the job spec's problems are (jobs/spec.py), under the parameter's own path.
            for text in validation_problems(exc, cls):
                problems.append(where + (text.removeprefix("(top level)") if text.startswith("(top level):")
                                         else "." + text))
        # Also when the range has other problems: they are independent. A parsed range stays in `out` so that
        # its values are still checked against the job spec; the trials wait for the problems to be fixed.
        if kind == "int" and value.get("scale") == "log" and value.get("step", 1) != 1:
            problems.append(f"{where}.step: a log-scale integer range takes every integer (step 1), received step "
                            f"{value.get('step')}; expected no step, or scale linear")
        if algorithm == "grid" and kind == "float" and value.get("grid_points") is None:
            problems.append(f"{where}.grid_points: a float range in a grid search needs grid_points (how many "
                            "evenly spaced values), received none; or use algorithm random")
    return out


def all_field_paths() -> list[str]:
    out: list[str] = []

    def walk(model, prefix):
        for name, f in model.model_fields.items():
            path = f"{prefix}{name}"
            out.append(path)
            sub = first_model(f.annotation)
            if sub is not None:
                walk(sub, path + ".")

    walk(JobSpec, "")
    return out

# -------------------------------------------------------------------------------------------- values
def round6(v: float) -> float:
    # Grid points like 0.1 * 3 ** (1/3) print as 0.14422495703074083; six significant digits keep specs readable.
    return float(f"{v:.6g}")


def grid_values(p: Param) -> list[Any]:
    if p.type == "choice":
        return list(p.values)
    if p.type == "int":
        if p.scale == "log" and p.grid_points:
            out = sorted({int(round(math.exp(x))) for x in _linspace(math.log(p.min), math.log(p.max), p.grid_points)})
            return out
        return list(range(p.min, p.max + 1, p.step))
    if not p.grid_points:
        raise ValueError("a float range needs grid_points in a grid search")
    if p.scale == "log":
        return [round6(math.exp(x)) for x in _linspace(math.log(p.min), math.log(p.max), p.grid_points)]
    return [round6(x) for x in _linspace(p.min, p.max, p.grid_points)]


def _linspace(a: float, b: float, n: int) -> list[float]:
    return [a + (b - a) * i / (n - 1) for i in range(n)]


def boundary_values(p: Param) -> list[Any]:
    """The values that decide whether the job spec accepts a parameter: every choice, a range's two ends."""
    if p.type == "choice":
        return list(p.values)
    if p.type == "int":
        return [p.min, p.min + (p.max - p.min) // p.step * p.step]
    return [p.min, p.max]


def space_size(params: Mapping[str, Param]) -> Optional[int]:
    """Distinct configurations, or None when a float range makes the space continuous."""
    n = 1
    for p in params.values():
        if p.type == "float":
            return None
        n *= len(grid_values(p)) if p.type == "choice" or p.scale == "linear" else (p.max - p.min + 1)
    return n


def grid_size(params: Mapping[str, Param]) -> int:
    return math.prod(len(grid_values(p)) for p in params.values())


def grid_configs(params: Mapping[str, Param]) -> list[dict[str, Any]]:
    keys = list(params)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid_values(params[k]) for k in keys))]
