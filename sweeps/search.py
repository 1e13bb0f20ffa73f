"""Search algorithms as pure functions: grid and seeded random sampling, Hyperband's plan and promotions.

Nothing here runs anything. The scheduler (sweeps/scheduler.py) asks `next_runs` what may start given the runs
recorded so far, so a resumed sweep, a local one and a Kubernetes one take the same decisions.

Hyperband (Li et al., 2018) with epochs as the budget: bracket s of s_max..0 samples n configurations and runs
successive halving on them: rung i trains n_i = floor(n / eta^i) of them for r_i = min_epochs * eta^(i + s_max - s)
epochs, and only the best 1/eta of a rung go on to the next. A trial that is not promoted is "stopped", not failed.
Each rung trains from scratch for its budget (jobs.train has no warm start), so rung runs are independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional

from jobs.contract import RunStatus

if TYPE_CHECKING:
    from sweeps.spec import Sweep

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


# --------------------------------------------------------------------------------------------- hyperband
@dataclass(frozen=True)
class Rung:
    n: int  # how many configurations train at this budget
    epochs: int


@dataclass(frozen=True)
class Bracket:
    s: int
    n_configs: int
    rungs: tuple[Rung, ...]


def hyperband_plan(min_epochs: int, max_epochs: int, eta: int) -> list[Bracket]:
    """Brackets from the most exploratory (many configurations, small budgets) to plain random search."""
    if min_epochs < 1 or max_epochs <= min_epochs or eta < 2:
        raise ValueError(f"expected 1 <= min_epochs < max_epochs and eta >= 2, received {min_epochs}, {max_epochs}, {eta}")
    ratio = max_epochs / min_epochs
    s_max = int(math.floor(math.log(ratio) / math.log(eta) + 1e-9))
    brackets = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil((s_max + 1) / (s + 1) * eta**s))
        rungs = []
        for i in range(s + 1):
            n_i = int(math.floor(n * eta ** (-i) + 1e-9))
            epochs = max_epochs if i == s else max(min_epochs, int(round(max_epochs * eta ** (i - s))))
            rungs.append(Rung(max(1, n_i), epochs))
        brackets.append(Bracket(s, n, tuple(rungs)))
    return brackets


def promote(values: Mapping[str, Optional[float]], k: int, mode: str) -> list[str]:
    """The best `k` trials of a rung, best first. Failed trials (None or NaN) are never promoted; ties go to
    the lower trial id so the decision is the same on every resume."""
    ok = [(t, v) for t, v in values.items() if v is not None and not (isinstance(v, float) and math.isnan(v))]
    sign = -1.0 if mode == "max" else 1.0
    ok.sort(key=lambda tv: (sign * tv[1], tv[0]))
    return [t for t, _ in ok[: max(0, k)]]


# ------------------------------------------------------------------------------------------ scheduling
@dataclass(frozen=True)
class RunRequest:
    trial: str
    rung: int
    epochs: Optional[int]  # None: the spec's own training.epochs

    @property
    def key(self) -> str:
        return run_key(self.trial, self.rung)


def run_key(trial: str, rung: int) -> str:
    return f"{trial}/r{rung}"


def parse_run_key(key: str) -> tuple[str, int]:
    """The inverse of run_key: "t003/r1" -> ("t003", 1)."""
    trial, _, rung = key.rpartition("/r")
    return trial, int(rung)


def run_id_for(rung: int) -> str:
    """The run id (run directory name) of a trial's run at `rung`."""
    return f"r{rung}"


def _finished(records: Mapping[str, dict], trial: str, rung: int) -> Optional[dict]:
    rec = records.get(run_key(trial, rung))
    return rec if rec and rec.get("status") in FINISHED else None


def _value(rec: Optional[dict]) -> Optional[float]:
    if not rec or rec.get("status") != RunStatus.SUCCEEDED:
        return None
    v = rec.get("value")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def walk(sweep: "Sweep", records: Mapping[str, dict]) -> tuple[list[RunRequest], dict[str, dict]]:
    """Runs that may start now (not finished) and each trial's state: status, rung, epochs reached.

    Trial statuses: pending | running | succeeded | failed | stopped (hyperband did not promote it).
    """
    mode = sweep.spec.objective.mode
    requests: list[RunRequest] = []
    states: dict[str, dict] = {}

    def state_of(trial: str, rung: int, epochs: Optional[int]) -> dict:
        rec = records.get(run_key(trial, rung))
        status = rec.get("status") if rec else None
        if status in FINISHED:
            return {"status": status, "rung": rung, "epochs": epochs}
        return {"status": RunStatus.RUNNING if status == RunStatus.RUNNING else RunStatus.PENDING, "rung": rung, "epochs": epochs}

    if sweep.plan is None:
        for t in sweep.trials:
            states[t.id] = state_of(t.id, 0, None)
            if not _finished(records, t.id, 0):
                requests.append(RunRequest(t.id, 0, None))
        return requests, states

    for b_index, bracket in enumerate(sweep.plan):
        members = [t.id for t in sweep.trials if t.bracket == b_index]
        for i, rung in enumerate(bracket.rungs):
            for t in members:
                states[t] = state_of(t, i, rung.epochs)
            waiting = [t for t in members if not _finished(records, t, i)]
            if waiting:
                requests.extend(RunRequest(t, i, rung.epochs) for t in waiting)
                if i < len(bracket.rungs) - 1:
                    for t in members:  # done with this rung, not with the trial: promoted or stopped later
                        if states[t]["status"] == RunStatus.SUCCEEDED:
                            states[t]["status"] = RunStatus.PENDING
                break
            if i == len(bracket.rungs) - 1:
                break
            promoted = promote({t: _value(records.get(run_key(t, i))) for t in members}, bracket.rungs[i + 1].n, mode)
            for t in members:
                if t not in promoted and states[t]["status"] == RunStatus.SUCCEEDED:
                    states[t]["status"] = RunStatus.STOPPED
            members = promoted
    return requests, states
