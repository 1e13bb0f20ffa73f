"""The Optuna study behind a sweep: its samplers and pruners, its journal in the sweep directory, and the mapping
between jobctl's parameters (dotted job-spec paths, any YAML value) and Optuna's distributions.

Optuna is imported inside these functions only: `jobctl --help`, `results` and `best` never pay for it.

    <sweep_dir>/study.journal   # JournalStorage(JournalFileBackend): one JSON operation a line, appended
    optuna-dashboard <sweep_dir>/study.journal   # the study in a browser (docs/sweeps.md)

Optuna asks and is told; jobctl's scheduler runs the trials. So the same study serves a local and a Kubernetes
sweep, and a resumed one: the journal is the sampler's memory (TPE and GP model the finished trials), sweep.json
the scheduler's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from sweeps import space
from sweeps.errors import SweepError

if TYPE_CHECKING:
    import optuna

    from sweeps.space import Param

# `sweep` arguments are sweeps.spec.Sweep; not imported even for typing, since sweeps.spec calls in here.
Sweep = Any

JOURNAL = "study.journal"
# Values Optuna's CategoricalDistribution stores as they are; anything else (a list of layer widths) as JSON text.
_PRIMITIVE = (type(None), bool, int, float, str)


def _optuna():
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # the sweep prints its own progress, one line per event
    return optuna


# ------------------------------------------------------------------------------------------- the space
def encode(value: Any) -> Any:
    return value if isinstance(value, _PRIMITIVE) else json.dumps(value)


def decode(p: "Param", value: Any) -> Any:
    """Optuna's value back to the YAML value the job spec takes."""
    if p.type == "choice":
        for choice in p.values:
            if encode(choice) == value:
                return choice
        raise SweepError(f"the study holds {value!r}, which is not one of the choices {p.values}; expected the same "
                         "parameters as the study was created with (pass --restart to start over)")
    if p.type == "int":
        return int(value)
    return space.round6(float(value))


def distributions(params: Mapping[str, "Param"]) -> dict[str, "optuna.distributions.BaseDistribution"]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out = {}
    for name, p in params.items():
        if p.type == "choice":
            out[name] = CategoricalDistribution([encode(v) for v in p.values])
        elif p.type == "int":
            log = p.scale == "log"
            out[name] = IntDistribution(p.min, p.max, log=log, step=1 if log else p.step)
        else:
            out[name] = FloatDistribution(p.min, p.max, log=p.scale == "log")
    return out


def random_configs(params: Mapping[str, "Param"], n: int, seed: int, problems: list[str]) -> list[dict[str, Any]]:
    """`n` distinct configurations drawn by Optuna's RandomSampler with `seed` in a study of their own: the same
    seed draws the same trials (a larger `n` draws the same first ones), which makes a random sweep resumable and
    listable by --dry-run."""
    size = space.space_size(params)
    if size is not None and size < n:
        problems.append(f"max_trials: the search space has only {size} distinct configurations, received "
                        f"{n} trials to sample; lower max_trials or use algorithm grid")
        return []
    optuna = _optuna()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    dists = distributions(params)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(100 * n):
        if len(out) == n:
            break
        trial = study.ask(dists)
        study.tell(trial, 0.0)
        config = {k: decode(params[k], trial.params[k]) for k in params}
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(config)
    if len(out) < n:
        problems.append(f"max_trials: drew only {len(out)} distinct configurations of the {n} asked for")
    return out


# ------------------------------------------------------------------------------------------- the study
def journal_path(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / JOURNAL


def repair_journal(path: Path) -> bool:
    """Cut a torn last line (the process died while appending it). Optuna skips it when reading, but the next
    append would glue a whole operation onto it and make the journal unreadable. Returns whether it cut."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return False
        fh.truncate(data.rfind(b"\n") + 1)
    return True


def make_sampler(sweep: Sweep, seed_offset: int = 0):
    """The algorithm's sampler. Grid and random trials are planned (drawn at load time and enqueued in order),
    so a random sampler only fills them in; TPE and GP propose each trial from the finished ones."""
    optuna = _optuna()
    alg = sweep.spec.algorithm
    # A resumed sweep draws on from another seed: the same seed would repeat the first process's startup draws.
    seed = alg.seed + seed_offset
    startup = alg.n_startup_trials
    if alg.type == "tpe":
        # constant_liar: trials still running count as bad guesses, so parallel trials do not all pile on one spot.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    if alg.type == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, deterministic_objective=False)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(sweep: Sweep):
    optuna = _optuna()
    p = sweep.spec.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_epochs)
    if p.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_epochs, reduction_factor=p.reduction_factor,
            min_early_stopping_rate=p.min_early_stopping_rate)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_epochs, max_resource=p.max_epochs, reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, *, restart: bool = False) -> "optuna.Study":
    """The sweep's study, created on first use and loaded after (call with the sweep directory locked)."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(sweep.sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if restart and path.exists():
        path.replace(path.with_name(path.name + ".old"))  # kept, as the trials' artifacts are
    repair_journal(path)
    storage = JournalStorage(JournalFileBackend(str(path)))
    direction = "maximize" if sweep.spec.objective.mode == "max" else "minimize"
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    offset = existing[sweep.name].n_trials if sweep.name in existing else 0
    return optuna.create_study(
        study_name=sweep.name, storage=storage, direction=direction, load_if_exists=True,
        sampler=make_sampler(sweep, offset), pruner=make_pruner(sweep),
    )


def load_study_readonly(sweep_dir: Path, name: Optional[str] = None) -> Optional["optuna.Study"]:
    """The study for plots (`jobctl results --plot`), or None when the sweep has no journal."""
    path = journal_path(sweep_dir)
    if not path.is_file():
        return None
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(path)))
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if not names:
        return None
    return optuna.load_study(study_name=name if name in names else names[0], storage=storage)


def trial_handle(study: "optuna.Study", number: int) -> "optuna.Trial":
    """A live handle on a running trial (also one asked by an earlier process) to report epochs and ask the pruner."""
    optuna = _optuna()
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None

