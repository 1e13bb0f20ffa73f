"""The sweep spec: a base job spec, a search space over its dotted field paths, an algorithm and an objective.

    name: digits-lr
    base: digits-cnn.yaml              # a path (relative to this file) or an inline mapping
    parameters:
      training.learning_rate: {min: 1.0e-4, max: 1.0e-1, scale: log, grid_points: 4}
      model.dropout: [0.0, 0.25, 0.5]  # a list is a choice
      training.batch_size: {min: 16, max: 64, step: 16}
    algorithm: {type: grid}            # grid | random (seed) | hyperband (min_epochs, max_epochs, eta, seed)
    objective: {metric: best_val_accuracy, direction: max}
    max_trials: 12
    parallelism: 2

`load_sweep` validates everything a sweep can know before it trains: unknown field paths, empty ranges, values
the job spec would reject (every trial's resolved spec is validated), a grid larger than `max_trials`. All
problems are reported at once as a `SpecError`, like the job spec. No TensorFlow here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator

from jobs import contract
from jobs.spec import (
    DNS1123_LABEL,
    JobSpec,
    SpecError,
    StrictModel,
    TrainingSpec,
    apply_overrides,
    field_exists,
    parse_spec,
    read_yaml,
    validation_problems,
)
from sweeps import search, space
from sweeps.space import Param, parse_parameters, yaml_number

# Keys of metrics.json a sweep can optimise (docs/ARCHITECTURE.md); the direction is inferred from the name.
OBJECTIVE_METRICS = (
    "best_val_accuracy",
    "best_val_loss",
    "best_monitor_value",
    "test_accuracy",
    "test_loss",
    "images_per_second",
    "wall_time_seconds",
    "fit_seconds",
)
# Trial runs are named "<sweep>-t<NNN>" (run directories, exports) and "<sweep>-t<NNN>-r<rung>" (Kubernetes Jobs);
# a job name may have 52 characters (jobs/spec.py), so 40 leave room for up to 10,000 trials.
MAX_SWEEP_NAME = 40


class Objective(StrictModel):
    metric: str = "best_val_accuracy"
    direction: Optional[Literal["max", "min"]] = Field(default=None, description="default: min for losses and times")

    @field_validator("metric")
    @classmethod
    def _known(cls, v):
        if v not in OBJECTIVE_METRICS:
            raise ValueError(f"expected one of {', '.join(OBJECTIVE_METRICS)} (keys of metrics.json), received {v!r}")
        return v

    @property
    def mode(self) -> str:
        if self.direction:
            return self.direction
        return "min" if ("loss" in self.metric or "seconds" in self.metric) else "max"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


class Algorithm(StrictModel):
    type: Literal["grid", "random", "hyperband"] = "grid"
    seed: int = Field(default=0, ge=0, description="random and hyperband sampling")
    min_epochs: int = Field(default=1, ge=1, description="hyperband: the smallest budget")
    max_epochs: Optional[int] = Field(default=None, ge=1, description="hyperband: the full budget (default: the base spec's training.epochs)")
    eta: int = Field(default=3, ge=2, description="hyperband: keep the best 1/eta of each rung")


class SweepSpec(StrictModel):
    name: str = Field(description="DNS-1123 label, at most 40 characters: trials are named <name>-t<NNN>")
    base: Union[str, dict[str, Any]] = Field(description="the job spec: a path (relative to the sweep file) or inline")
    fixed: dict[str, Any] = Field(default_factory=dict, description="dotted path -> value set for every trial")
    parameters: dict[str, Any] = Field(description="dotted job-spec field path -> choice list or range")
    algorithm: Algorithm = Field(default_factory=Algorithm)
    objective: Objective = Field(default_factory=Objective)
    max_trials: Optional[int] = Field(default=None, ge=1, description="grid: its size; random: 10; hyperband: its plan")
    parallelism: Optional[int] = Field(default=None, ge=1, le=256, description="default: what the machine allows")
    threads_per_trial: Optional[int] = Field(default=None, ge=1, description="TF intra-op threads per local trial")
    trial_timeout_seconds: Optional[int] = Field(
        default=None, ge=1,
        description="a trial still running after this long is stopped and recorded failed (local: SIGTERM, then "
                    "SIGKILL; Kubernetes: the trial Job's activeDeadlineSeconds)")
    sweep_dir: Optional[str] = Field(default=None, description="default: <artifacts_dir>/sweeps/<name>")
    artifacts_dir: Optional[str] = Field(default=None, description="default: the base spec's artifacts_dir")

    @field_validator("name")
    @classmethod
    def _dns(cls, v):
        if len(v) > MAX_SWEEP_NAME or not DNS1123_LABEL.fullmatch(v):
            raise ValueError(
                "expected a DNS-1123 label (lower-case letters, digits and '-', starting and ending with a letter "
                f"or digit, at most {MAX_SWEEP_NAME} characters), received {v!r}"
            )
        return v


@dataclass
class Trial:
    """One configuration. `bracket` is hyperband's bracket index (0 for grid and random)."""

    id: str  # "t000"
    params: dict[str, Any]
    bracket: int = 0


@dataclass
class Sweep:
    """A validated sweep: the spec, the base job spec as data, every trial, and where things go."""

    spec: SweepSpec
    base_data: dict
    trials: list[Trial]
    source: str
    sweep_dir: Path
    artifacts_dir: Path
    plan: Any = None  # hyperband: list[Bracket]

    @property
    def name(self) -> str:
        return self.spec.name

    def trial_name(self, trial_id: str) -> str:
        return f"{self.spec.name}-{trial_id}"

    def trial_job_spec(self, trial: Trial, epochs: Optional[int] = None) -> JobSpec:
        """The resolved job spec a trial (at a hyperband budget of `epochs`) trains."""
        return parse_spec(self.trial_data(trial, epochs), f"{self.source} trial {trial.id}")

    def trial_data(self, trial: Trial, epochs: Optional[int] = None) -> dict:
        name = self.trial_name(trial.id)
        # Own spec name and model name per trial: run directories and exports never collide.
        overrides = {**trial.params, "name": name, "export.model_name": name}
        if epochs is not None:
            overrides["training.epochs"] = epochs
        overrides["labels"] = {**(self.base_data.get("labels") or {}), "jobctl.io/sweep": self.name, "jobctl.io/trial": trial.id}
        timeout = self.spec.trial_timeout_seconds
        if timeout:
            own = (self.base_data.get("resources") or {}).get("active_deadline_seconds")
            overrides["resources.active_deadline_seconds"] = min(timeout, own) if isinstance(own, int) else timeout
        return apply_overrides(self.base_data, overrides)


# ---------------------------------------------------------------------------------------------- loading
def load_sweep(path: Union[str, Path, dict], *, source: Optional[str] = None) -> Sweep:
    """Read and validate a sweep spec (a file or a mapping); raises SpecError listing every problem.

    One pass: each check runs when the fields it reads are valid, whatever else is wrong (a bad objective or
    algorithm does not hide a bad parameter). Only what needs a valid search space waits for it: the grid's size
    against max_trials, enough distinct random configurations, and every trial's resolved spec."""
    if isinstance(path, dict):
        data, src, root = path, source or "sweep", Path.cwd()
    else:
        path = Path(path)
        data, src, root = read_yaml(path), source or str(path), path.parent
    if not isinstance(data, dict):
        raise SpecError([f"(top level): expected a mapping of fields, received {type(data).__name__}"], src)
    problems: list[str] = []
    spec, bad = _validate_fields(data, src, problems)

    # The base job spec, with `fixed` applied.
    base_data: dict = {}
    base_ok = "base" not in bad
    if base_ok:
        before = len(problems)
        base_data = _load_base(spec.base, root, problems)
        base_ok = len(problems) == before
    fixed_ok = "fixed" not in bad
    if fixed_ok:
        before = len(problems)
        for path_, value in spec.fixed.items():
            if not field_exists(path_):
                problems.append(f"fixed.{path_}: unknown job spec field; expected a dotted path such as training.epochs")
            elif path_ in spec.parameters:
                problems.append(f"fixed.{path_}: also a parameter; expected a field either fixed or searched, not both")
        fixed_ok = len(problems) == before
        if spec.fixed and fixed_ok and base_ok:
            base_data = apply_overrides(base_data, {k: yaml_number(v) for k, v in spec.fixed.items()})

    # The search space: each parameter, each of its values alone on the base, what the algorithm needs of it.
    before = len(problems)
    params: dict[str, Param] = {}
    alg, alg_type = spec.algorithm, _algorithm_type(data, spec, bad)
    if "parameters" not in bad:
        params = parse_parameters(spec.parameters, problems, alg_type)
    if base_ok:
        _validate_boundaries(spec.name, base_data, params, problems)
    space_ok = "parameters" not in bad and len(problems) == before

    plan = None
    if alg_type == "hyperband":
        before = len(problems)
        if "training.epochs" in spec.parameters:
            problems.append("parameters.training.epochs: hyperband uses epochs as its budget; remove this parameter "
                            "and set algorithm.min_epochs / algorithm.max_epochs")
        max_epochs = alg.max_epochs if "algorithm" not in bad else None
        if max_epochs is None and "algorithm" not in bad and base_ok and fixed_ok:
            max_epochs = (base_data.get("training") or {}).get("epochs", TrainingSpec().epochs)
            if not isinstance(max_epochs, int) or isinstance(max_epochs, bool):
                problems.append(f"algorithm.max_epochs: not given, and the base spec's training.epochs is not a whole "
                                f"number (received {max_epochs!r}); expected an integer in either")
                max_epochs = None
        if max_epochs is not None and max_epochs <= alg.min_epochs:
            problems.append(f"algorithm.max_epochs: expected more than min_epochs ({alg.min_epochs}), "
                            f"received {max_epochs}")
        elif max_epochs is not None:
            alg.max_epochs = max_epochs
            plan = search.hyperband_plan(alg.min_epochs, max_epochs, alg.eta)
            n = sum(b.n_configs for b in plan)
            if "max_trials" not in bad and spec.max_trials is not None and n > spec.max_trials:
                problems.append(f"max_trials: hyperband with min_epochs {alg.min_epochs}, max_epochs {max_epochs}, "
                                f"eta {alg.eta} samples {n} configurations "
                                f"({', '.join(str(b.n_configs) for b in plan)} per bracket), received max_trials "
                                f"{spec.max_trials}; raise max_trials, lower max_epochs or raise eta")
        if len(problems) > before:
            plan = None

    # The trials: only from a valid space and algorithm.
    trials: list[Trial] = []
    if space_ok and "algorithm" not in bad and "max_trials" not in bad and (alg_type != "hyperband" or plan):
        before = len(problems)
        if alg_type == "hyperband":
            n = sum(b.n_configs for b in plan)
            configs = space.random_configs(params, n, alg.seed, problems)
            brackets = [i for i, b in enumerate(plan) for _ in range(b.n_configs)]
            trials = [Trial(_trial_id(i, n), c, brackets[i]) for i, c in enumerate(configs)]
        elif alg_type == "grid":
            size = space.grid_size(params)
            if spec.max_trials is not None and size > spec.max_trials:
                dims = " x ".join(f"{len(space.grid_values(p))} ({k})" for k, p in params.items())
                problems.append(f"max_trials: the grid has {size} trials ({dims}), received max_trials "
                                f"{spec.max_trials}; raise max_trials, shrink the grid or use algorithm random")
            else:
                configs = space.grid_configs(params)
                trials = [Trial(_trial_id(i, len(configs)), c) for i, c in enumerate(configs)]
        else:
            n = spec.max_trials or 10
            configs = space.random_configs(params, n, alg.seed, problems)
            trials = [Trial(_trial_id(i, n), c) for i, c in enumerate(configs)]
        if len(problems) > before:
            trials = []

    spec.parameters = params
    artifacts = Path(spec.artifacts_dir or base_data.get("artifacts_dir") or "artifacts")
    sweep_dir = Path(spec.sweep_dir) if spec.sweep_dir else contract.sweep_dir(artifacts, spec.name)
    sweep = Sweep(spec, base_data, trials, src, sweep_dir, artifacts, plan)
    if trials and base_ok and fixed_ok and "name" not in bad:
        _validate_values(sweep, params, problems)
    if problems:
        raise SpecError(problems, src)
    return sweep


def _validate_fields(data: dict, src: str, problems: list[str]) -> tuple[SweepSpec, set[str]]:
    """The sweep spec's own fields. With problems: they are added to `problems`, and the spec returned holds the
    valid fields, the others (named in the returned set) at their defaults or stand-ins, so that every check which
    reads only valid fields still runs."""
    try:
        return SweepSpec.model_validate(data), set()
    except ValidationError as exc:
        problems.extend(validation_problems(exc, SweepSpec))
        bad = {str(err["loc"][0]) for err in exc.errors(include_url=False) if err["loc"]}
    stand_in = {"name": "sweep", "base": {}, "parameters": {}}
    try:
        return SweepSpec.model_validate({**stand_in, **{k: v for k, v in data.items() if str(k) not in bad}}), bad
    except ValidationError:
        raise SpecError(problems, src) from None


def _algorithm_type(data: dict, spec: SweepSpec, bad: set[str]) -> Optional[str]:
    """The algorithm's type when it is known: also when another algorithm field is wrong."""
    if "algorithm" not in bad:
        return spec.algorithm.type
    raw = data.get("algorithm")
    kind = raw.get("type", "grid") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) and kind in ("grid", "random", "hyperband") else None


def _trial_id(i: int, n: int) -> str:
    return f"t{i:0{max(3, len(str(n - 1)))}d}"


def _load_base(base, root: Path, problems: list[str]) -> dict:
    if isinstance(base, dict):
        return base
    p = Path(base)
    if not p.is_absolute():
        p = root / p
    try:
        data = read_yaml(p)
    except SpecError as exc:
        problems.extend(f"base: {m}" for m in exc.problems)
        return {}
    if not isinstance(data, dict):
        problems.append(f"base: {p} must hold a mapping of job spec fields, received {type(data).__name__}")
        return {}
    return data



def _check(data: dict, blame: dict[str, Any], where: str, problems: list[str], *, alone: bool = False) -> None:
    """Validate one resolved spec and word each problem for the sweep: a parameter's value, a combination of
    values (the problem sits on an ancestor of a parameter, e.g. `training` for nesterov with adam), or the base.

    `alone`: the value was applied alone to the base, so only problems on the parameter's own path count;
    combinations are judged on the real trials."""
    try:
        parse_spec(data)
    except SpecError as exc:
        for p in exc.problems:
            where_ = p.split(":", 1)[0]
            hit = next((k for k in blame if where_ == k or where_.startswith(k + ".") or where_.startswith(k + "[")), None)
            if hit:
                msg = f"parameters.{hit}: value {blame[hit]!r} is rejected by the job spec: {p}"
            elif alone:
                continue
            elif any(k.startswith(where_ + ".") for k in blame):
                msg = f"{where}: {p}"
            else:
                msg = f"base: {p}"
            if msg not in problems:
                problems.append(msg)


def _validate_boundaries(sweep_name: str, base_data: dict, params: dict[str, Param], problems: list[str]) -> None:
    """Every choice and both ends of every range, each alone on the base spec."""
    name = {"name": f"{sweep_name}-t000"}
    for path, p in params.items():
        for v in space.boundary_values(p):
            _check(apply_overrides(base_data, {**name, path: v}), {path: v}, "base", problems, alone=True)


def _validate_values(sweep: Sweep, params: dict[str, Param], problems: list[str]) -> None:
    """Every trial's resolved spec (at every Hyperband budget): combinations can fail where single values pass."""
    epochs = [None]
    if sweep.plan is not None:
        epochs = sorted({r.epochs for b in sweep.plan for r in b.rungs})
    for t in sweep.trials:
        for e in epochs:
            _check(sweep.trial_data(t, e), t.params, f"trial {t.id} ({_fmt_params(t.params)})", problems)


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def cpu_count() -> int:
    """The cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_parallelism() -> int:
    """What the machine allows: one trial per core, and no more than fit in memory (~1.5 GB per TF trial)."""
    cores = cpu_count()
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) for line in fh if ":" in line}
        by_memory = max(1, int(info.get("MemAvailable", 0) * 1024 / 1.5e9))
    except (OSError, ValueError, IndexError):
        by_memory = cores
    return max(1, min(cores, by_memory))
