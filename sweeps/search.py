"""What each trial's recorded runs make of it, as pure functions: its state, and which runs may start now.

Nothing here runs or samples anything. The scheduler (sweeps/scheduler.py) asks `walk` what may start given the
runs recorded so far, so a resumed sweep, a local one and a Kubernetes one take the same decisions. Optuna
(sweeps/study.py) proposes the trials and decides pruning; this module only reads the record.

A trial's runs are attempts `r0`, `r1`, ...: a failed attempt is retried as the next one while the spec's
`retries` allow (never a bad spec, exit 2). A run stopped by the sweep itself (Ctrl-C, a lost process) is
"interrupted" and runs again under the same id, as is a Hyperband trial paused at a rung and then promoted: the
trainer resumes the same run directory from its backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional

from jobs import exit_codes
from jobs.contract import RunStatus

if TYPE_CHECKING:
    from sweeps.spec import Sweep

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.PRUNED)
# A sweep record's own states, beside jobs.contract.RunStatus:
# - interrupted: stopped by the sweep itself (Ctrl-C, a lost process) or recorded interrupted/preempted by the
#   trainer; not a result, so a resumed sweep runs it again;
# - paused: a Hyperband trial stopped at a rung, its backup saved, waiting for the rung's peers;
# - promoted: a paused trial the pruner let go on: it resumes from its backup (or from scratch, warm_start false).
INTERRUPTED = "interrupted"
PAUSED = "paused"
PROMOTED = "promoted"


@dataclass(frozen=True)
class RunRequest:
    trial: str
    attempt: int
    resume: bool = False  # a promoted Hyperband trial going on from its rung

    @property
    def key(self) -> str:
        return run_key(self.trial, self.attempt)

    @property
    def run_id(self) -> str:
        return run_id_for(self.attempt)


def run_key(trial: str, attempt: int) -> str:
    return f"{trial}/r{attempt}"


def parse_run_key(key: str) -> tuple[str, int]:
    """The inverse of run_key: "t003/r1" -> ("t003", 1)."""
    trial, _, attempt = key.rpartition("/r")
    return trial, int(attempt)


def run_id_for(attempt: int) -> str:
    """The run id (run directory name) of a trial's attempt."""
    return f"r{attempt}"


def last_run(runs: Mapping[str, dict], trial: str) -> tuple[int, Optional[dict]]:
    """The trial's latest attempt and its record ((0, None) before its first run)."""
    attempt, rec = 0, None
    while run_key(trial, attempt) in runs:
        rec = runs[run_key(trial, attempt)]
        attempt += 1
    return (attempt - 1, rec) if rec is not None else (0, None)


def _retryable(sweep: "Sweep", attempt: int, rec: dict) -> bool:
    # A bad spec fails every time (exit 2), so does a trial that timed out: retrying only burns the budget.
    return (attempt < sweep.spec.retries and rec.get("exit_code") != exit_codes.BAD_SPEC
            and not rec.get("timed_out"))


def trial_state(sweep: "Sweep", trial: str, runs: Mapping[str, dict]) -> dict:
    """{"status", "attempt", "record"}: pending | running | paused | succeeded | pruned | failed."""
    attempt, rec = last_run(runs, trial)
    status = rec.get("status") if rec else None
    if rec is None:
        return {"status": RunStatus.PENDING, "attempt": 0, "record": None}
    if status in (RunStatus.SUCCEEDED, RunStatus.PRUNED, RunStatus.RUNNING):
        return {"status": RunStatus(status), "attempt": attempt, "record": rec}
    if status == PAUSED:
        return {"status": PAUSED, "attempt": attempt, "record": rec}
    if status == RunStatus.FAILED:
        if _retryable(sweep, attempt, rec):
            return {"status": RunStatus.PENDING, "attempt": attempt + 1, "record": rec}
        return {"status": RunStatus.FAILED, "attempt": attempt, "record": rec}
    # interrupted (rerun the same run id) or promoted (resume it from its rung)
    return {"status": RunStatus.PENDING, "attempt": attempt, "record": rec, "resume": status == PROMOTED}


def walk(sweep: "Sweep", trials: Mapping[str, dict], runs: Mapping[str, dict]) -> tuple[list[RunRequest], dict[str, dict]]:
    """Runs that may start now, promoted trials first (they are closest to done), and every trial's state."""
    states = {tid: trial_state(sweep, tid, runs) for tid in trials}
    requests = [RunRequest(tid, s["attempt"], bool(s.get("resume"))) for tid, s in states.items()
                if s["status"] == RunStatus.PENDING]
    requests.sort(key=lambda r: (not r.resume, r.trial))
    return requests, states


def is_interrupted(rec: Optional[dict]) -> bool:
    return bool(rec) and rec.get("status") == INTERRUPTED
