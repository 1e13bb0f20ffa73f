"""The sweep spec's own sections, as typed models: objective, algorithm, pruner and the top level.

    algorithm: {type: tpe, seed: 0, n_startup_trials: 5}       # grid | random | tpe | gp
    pruner: {type: asha, min_epochs: 1, reduction_factor: 3}   # none | median | asha | hyperband

Checks that read more than one section (a pruner with a grid, gp over choices only) live in sweeps/spec.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, field_validator

from jobs.contract import METRICS_FILE
from jobs.spec import DNS1123_LABEL, StrictModel

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
# A pruner compares trials epoch by epoch: the objective must have a per-epoch counterpart in the run's
# history.json (written by jobs.train after every epoch).
EPOCH_METRICS = {"best_val_accuracy": "val_accuracy", "best_val_loss": "val_loss"}
# Trial runs are named "<sweep>-t<NNN>" (run directories, exports) and "<sweep>-t<NNN>-r<attempt>" (Kubernetes
# Jobs); a job name may have 52 characters, so 40 leave room for up to 10,000 trials.
MAX_SWEEP_NAME = 40


class Objective(StrictModel):
    metric: str = "best_val_accuracy"
    direction: Optional[Literal["max", "min"]] = Field(default=None, description="default: min for losses and times")

    @field_validator("metric")
    @classmethod
    def _known(cls, v):
        if v not in OBJECTIVE_METRICS:
            raise ValueError(f"expected one of {', '.join(OBJECTIVE_METRICS)} (keys of {METRICS_FILE}), received {v!r}")
        return v

    @property
    def mode(self) -> str:
        if self.direction:
            return self.direction
        return "min" if ("loss" in self.metric or "seconds" in self.metric) else "max"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


ALGORITHMS = ("grid", "random", "tpe", "gp")


class Algorithm(StrictModel):
    type: Literal["grid", "random", "tpe", "gp"] = "grid"
    seed: int = Field(default=0, ge=0, description="random draws, and the startup draws of tpe and gp")
    n_startup_trials: int = Field(default=10, ge=1, description="tpe, gp: random trials before the model proposes")

    @field_validator("type", mode="before")
    @classmethod
    def _hyperband_moved(cls, v):
        if v == "hyperband":
            raise ValueError("received 'hyperband', which is a pruner now: expected one of grid, random, tpe, gp, "
                             "with `pruner: {type: hyperband, min_epochs, max_epochs, reduction_factor}` beside it")
        return v


class NoPruner(StrictModel):
    type: Literal["none"] = "none"


class MedianPruner(StrictModel):
    """Stops a trial whose epoch is worse than the median of the earlier trials at that epoch."""

    type: Literal["median"]
    n_startup_trials: int = Field(default=5, ge=0, description="trials that finish before any is pruned")
    n_warmup_epochs: int = Field(default=0, ge=0, description="epochs of each trial never judged")


class AshaPruner(StrictModel):
    """Asynchronous successive halving: at rungs of min_epochs * reduction_factor^k epochs, a trial goes on only if
    it is in the best 1/reduction_factor of the trials that reached that rung."""

    type: Literal["asha"]
    min_epochs: int = Field(default=1, ge=1, description="the first rung")
    reduction_factor: int = Field(default=3, ge=2, description="keep the best 1/reduction_factor at each rung")
    min_early_stopping_rate: int = Field(default=0, ge=0, description="skip the first rungs: start at min_epochs * reduction_factor^rate")


class HyperbandPruner(StrictModel):
    """Brackets of ASHA with different first rungs (Li et al., 2018). A trial pauses at each of its rungs (its
    run saves a backup and stops); a promoted trial continues from that backup, with its optimizer state
    (warm_start), instead of training again from scratch."""

    type: Literal["hyperband"]
    min_epochs: int = Field(default=1, ge=1, description="the smallest budget")
    max_epochs: Optional[int] = Field(default=None, ge=2, description="the full budget (default: the base spec's training.epochs)")
    reduction_factor: int = Field(default=3, ge=2, description="keep the best 1/reduction_factor at each rung")
    warm_start: bool = Field(default=True, description="false: a promoted trial trains again from epoch 1 (keras-tuner's way)")


Pruner = Annotated[Union[NoPruner, MedianPruner, AshaPruner, HyperbandPruner], Field(discriminator="type")]


class SweepSpec(StrictModel):
    name: str = Field(description="DNS-1123 label, at most 40 characters: trials are named <name>-t<NNN>")
    base: Union[str, dict[str, Any]] = Field(description="the job spec: a path (relative to the sweep file) or inline")
    fixed: dict[str, Any] = Field(default_factory=dict, description="dotted path -> value set for every trial")
    parameters: dict[str, Any] = Field(description="dotted job-spec field path -> choice list or range")
    algorithm: Algorithm = Field(default_factory=Algorithm)
    pruner: Pruner = Field(default_factory=NoPruner)
    objective: Objective = Field(default_factory=Objective)
    max_trials: Optional[int] = Field(default=None, ge=1, description="grid: its size; otherwise 10")
    retries: int = Field(default=0, ge=0, le=10, description="a failed trial (not a bad spec) runs again up to this many times")
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
