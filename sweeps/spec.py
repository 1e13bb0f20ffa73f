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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import ValidationError

from jobs import contract
from jobs.spec import (
    JobSpec,
    SpecError,
    TrainingSpec,
    apply_overrides,
    field_exists,
    parse_spec,
    read_yaml,
    validation_problems,
)
from sweeps import space
from sweeps.fields import (  # noqa: F401 - re-exported
    ALGORITHMS,
    EPOCH_METRICS,
    MAX_SWEEP_NAME,
    OBJECTIVE_METRICS,
    SweepSpec,
)
from sweeps.space import Param, parse_parameters, yaml_number


@dataclass
class Trial:
    """One configuration: planned at load time (grid, random) or proposed by the sampler at run time (tpe, gp)."""

    id: str  # "t000"
    params: dict[str, Any]


@dataclass
class Sweep:
    """A validated sweep: the spec, the base job spec as data, every trial, and where things go."""

    spec: SweepSpec
    base_data: dict
    trials: list[Trial]
    source: str
    sweep_dir: Path
    artifacts_dir: Path
    params: dict[str, Param] = field(default_factory=dict)
    max_trials: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def planned(self) -> bool:
        """Grid and random trials are known before anything runs; tpe and gp propose theirs from the results."""
        return self.spec.algorithm.type in ("grid", "random")

    @property
    def epoch_metric(self) -> Optional[str]:
        """The history.json key reported to the pruner after every epoch (None: no pruner)."""
        return None if self.spec.pruner.type == "none" else EPOCH_METRICS[self.spec.objective.metric]

    @property
    def epochs(self) -> Optional[int]:
        """Every trial's training.epochs when the sweep sets it (hyperband's full budget), else the base spec's."""
        return getattr(self.spec.pruner, "max_epochs", None)

    def trial_id(self, index: int) -> str:
        return f"t{index:0{max(3, len(str(max(self.max_trials, 1) - 1)))}d}"

    def trial_name(self, trial_id: str) -> str:
        return f"{self.spec.name}-{trial_id}"

    def trial_job_spec(self, trial: Trial) -> JobSpec:
        """The resolved job spec a trial trains."""
        return parse_spec(self.trial_data(trial), f"{self.source} trial {trial.id}")

    def trial_data(self, trial: Trial) -> dict:
        name = self.trial_name(trial.id)
        # Own spec name and model name per trial: run directories and exports never collide.
        overrides = {**trial.params, "name": name, "export.model_name": name}
        if self.epochs is not None:
            overrides["training.epochs"] = self.epochs
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

    # What the algorithm and the pruner need of each other, the space and the objective.
    _check_algorithm_and_pruner(data, spec, bad, params, base_data if base_ok and fixed_ok else None, problems)

    # The trials: grid and random plan theirs now, from a valid space; tpe and gp propose them as results come.
    trials: list[Trial] = []
    max_trials = spec.max_trials or 10
    ready = space_ok and "algorithm" not in bad and "max_trials" not in bad
    if ready and alg_type == "grid":
        size = space.grid_size(params)
        if spec.max_trials is not None and size > spec.max_trials:
            dims = " x ".join(f"{len(space.grid_values(p))} ({k})" for k, p in params.items())
            problems.append(f"max_trials: the grid has {size} trials ({dims}), received max_trials "
                            f"{spec.max_trials}; raise max_trials, shrink the grid or use algorithm random")
        else:
            configs = space.grid_configs(params)
            max_trials = len(configs)
            trials = [Trial(_trial_id(i, len(configs)), c) for i, c in enumerate(configs)]
    elif ready and alg_type == "random":
        from sweeps import study

        before = len(problems)
        configs = study.random_configs(params, max_trials, alg.seed, problems)
        if len(problems) == before:
            trials = [Trial(_trial_id(i, max_trials), c) for i, c in enumerate(configs)]

    spec.parameters = params
    artifacts = Path(spec.artifacts_dir or base_data.get("artifacts_dir") or "artifacts")
    sweep_dir = Path(spec.sweep_dir) if spec.sweep_dir else contract.sweep_dir(artifacts, spec.name)
    sweep = Sweep(spec, base_data, trials, src, sweep_dir, artifacts, params, max_trials)
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
    return kind if isinstance(kind, str) and kind in ALGORITHMS else None


def _check_algorithm_and_pruner(data: dict, spec: SweepSpec, bad: set[str], params: dict[str, Param],
                                base_data: Optional[dict], problems: list[str]) -> None:
    """The checks that read several sections; each runs when the sections it reads are valid."""
    alg_type = _algorithm_type(data, spec, bad)
    pruner = spec.pruner if "pruner" not in bad else None
    if pruner is not None and pruner.type != "none":
        if alg_type == "grid":
            problems.append(f"pruner: received {pruner.type} with algorithm grid, where it means nothing: a grid "
                            "runs every combination to rank them all, and a pruned one would leave a hole; expected "
                            "pruner none with a grid, or algorithm random, tpe or gp")
        if "objective" not in bad and spec.objective.metric not in EPOCH_METRICS:
            problems.append(f"pruner: judges trials epoch by epoch on {' or '.join(EPOCH_METRICS.values())} "
                            f"(history.json), but objective.metric {spec.objective.metric} exists only once a trial "
                            f"has finished; expected objective {' or '.join(EPOCH_METRICS)}, or pruner none")
        if "parameters" not in bad and "training.epochs" in spec.parameters:
            problems.append("parameters.training.epochs: the pruner uses epochs as its budget; expected no "
                            "parameter over it (set pruner.min_epochs and the base spec's training.epochs)")
    if pruner is not None and pruner.type == "hyperband":
        max_epochs = pruner.max_epochs
        if max_epochs is None and base_data is not None:
            max_epochs = (base_data.get("training") or {}).get("epochs", TrainingSpec().epochs)
            if not isinstance(max_epochs, int) or isinstance(max_epochs, bool):
                problems.append(f"pruner.max_epochs: not given, and the base spec's training.epochs is not a whole "
                                f"number (received {max_epochs!r}); expected an integer in either")
                max_epochs = None
        if max_epochs is not None and max_epochs <= pruner.min_epochs:
            problems.append(f"pruner.max_epochs: expected more than min_epochs ({pruner.min_epochs}), received {max_epochs}")
        elif max_epochs is not None:
            pruner.max_epochs = max_epochs
    if alg_type == "gp":
        if params and all(p.type == "choice" for p in params.values()):
            problems.append(f"algorithm.type: gp models numeric ranges with a Gaussian process, but every parameter "
                            f"is a choice ({', '.join(params)}); expected at least one int or float range, or "
                            "algorithm tpe, which models choices")
        elif not _torch_available():  # a choice-only space is wrong for gp whatever is installed: one error
            problems.append("algorithm.type: gp runs Optuna's GPSampler, which needs PyTorch, not installed here; "
                            "expected `pip install 'jobctl[gp]'` (torch 2.13, CPU build) or algorithm tpe")


def _torch_available() -> bool:
    from sweeps.study import torch_available

    return torch_available()


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
    """Every planned trial's resolved spec: combinations can fail where single values pass. (A proposed trial's
    spec is checked when the sampler proposes it: see `trial_problems`.)"""
    for t in sweep.trials:
        problems.extend(m for m in trial_problems(sweep, t) if m not in problems)  # a base mistake once, not per trial


def trial_problems(sweep: Sweep, trial: Trial) -> list[str]:
    """What the job spec rejects in this trial's resolved spec, worded for the sweep (empty: it is valid)."""
    out: list[str] = []
    _check(sweep.trial_data(trial), trial.params, f"trial {trial.id} ({_fmt_params(trial.params)})", out)
    return out


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
