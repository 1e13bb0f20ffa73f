"""The sweep scheduler: asks the search what may run, starts it on a backend within `parallelism`, records every
outcome in the sweep state (atomically, after each change) and keeps the leaderboard current.

Backends (sweeps/backends/local.py, sweeps/backends/kubernetes.py) only start, watch and stop runs; every decision (what next,
what is promoted, what is stopped, what counts as done) is taken here and in sweeps/search.py, so both
backends and a resumed sweep behave the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from jobs.contract import RunStatus
from jobs.spec import JobSpec
from sweeps.leaderboard import write_leaderboard
from sweeps.state import INTERRUPTED, SweepState, now
from sweeps.search import FINISHED, RunRequest, parse_run_key, run_id_for, run_key, walk
from sweeps.spec import Sweep, Trial, default_parallelism


class Backend(Protocol):
    name: str

    def prepare(self) -> None:
        """Check what only the backend can (e.g. render every Kubernetes Job) before any run starts."""

    def capacity(self, parallelism: int) -> int:
        """How many more runs may start now without exceeding `parallelism` active ones."""

    def start(self, req: RunRequest, trial: Trial, spec: JobSpec, run_id: str) -> dict:
        """Start one run; returns fields for its record (log path, Job name, ...)."""

    def active(self) -> set[str]:
        """Keys (RunRequest.key) of the runs this backend is watching."""

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        """Block up to `timeout` seconds; return (key, outcome) of the runs that finished."""

    def adopt(self, key: str, record: dict) -> bool:
        """A run recorded as running by an earlier sweep process: watch it if it still runs."""

    def stop_all(self) -> list[tuple[str, dict]]:
        """Stop every active run (Ctrl-C); return their outcomes (status "interrupted")."""

    def abandon(self) -> list[tuple[str, dict]]:
        """The sweep failed (an API error, a bug): stop what cannot outlive this process, return its outcomes."""


@dataclass
class Progress:
    kind: str  # "resumed" | "started" | "finished" | "interrupted" | "done"
    counts: dict[str, int]
    best: Optional[dict] = None  # {"trial", "value", "params"}
    trial: Optional[str] = None
    rung: Optional[int] = None
    record: Optional[dict] = None
    skipped: int = 0
    rerun: int = 0


@dataclass
class SweepOutcome:
    sweep_dir: str
    counts: dict[str, int]
    best: Optional[dict]
    leaderboard: list[dict] = field(default_factory=list)
    interrupted: bool = False


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C: running trials were stopped, the state saved; the same command resumes the sweep."""

    def __init__(self, outcome: SweepOutcome):
        super().__init__("sweep interrupted")
        self.outcome = outcome


def summarize(sweep: Sweep, runs: dict) -> tuple[dict[str, int], Optional[dict]]:
    _, states = walk(sweep, runs)
    counts = {k: 0 for k in (RunStatus.SUCCEEDED, RunStatus.STOPPED, RunStatus.FAILED, RunStatus.RUNNING, RunStatus.PENDING)}
    for s in states.values():
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    counts["total"] = len(states)
    obj = sweep.spec.objective
    best = None
    for t in sweep.trials:
        if states[t.id]["status"] != RunStatus.SUCCEEDED:
            continue
        rec = runs.get(run_key(t.id, states[t.id]["rung"])) or {}
        v = rec.get("value")
        if v is not None and (best is None or obj.better(v, best["value"])):
            best = {"trial": t.id, "value": v, "params": t.params}
    return counts, best


def run_sweep(
    sweep: Sweep,
    backend: Backend,
    *,
    parallelism: Optional[int] = None,
    restart: bool = False,
    on_progress: Optional[Callable[[Progress], None]] = None,
    poll_seconds: float = 0.5,
) -> SweepOutcome:
    """Run (or resume) `sweep` to the end. Ctrl-C stops the active runs and raises SweepInterrupted."""
    parallelism = parallelism or sweep.spec.parallelism or default_parallelism()
    backend.prepare()
    state = SweepState.open(sweep, restart=restart)
    trials = {t.id: t for t in sweep.trials}
    emit = on_progress or (lambda p: None)

    def report(kind: str, **kw) -> None:
        counts, best = summarize(sweep, state.runs)
        emit(Progress(kind, counts, best, **kw))

    # Runs an earlier process left "running": a backend that can still see them keeps watching, else they rerun.
    for key, rec in state.runs.items():
        if rec.get("status") == RunStatus.RUNNING and not backend.adopt(key, rec):
            rec["status"] = INTERRUPTED
            rec.setdefault("error", "the sweep process stopped while this run was active")
    skipped = sum(1 for r in state.runs.values() if r.get("status") in FINISHED)
    rerun = sum(1 for r in state.runs.values() if r.get("status") == INTERRUPTED)
    state.save()
    write_leaderboard(sweep, state)  # `jobctl results` works from the first second
    if skipped or rerun:
        report("resumed", skipped=skipped, rerun=rerun)

    def record(key: str, outcome: dict) -> None:
        rec = state.runs.setdefault(key, {})
        rec.update(outcome)
        state.save()
        write_leaderboard(sweep, state)
        trial, rung = parse_run_key(key)
        report("finished", trial=trial, rung=rung, record=rec)

    try:
        while True:
            requests, _ = walk(sweep, state.runs)
            active = backend.active()
            startable = [r for r in requests if r.key not in active]
            if startable:  # capacity() may cost a Kubernetes list call: ask only when something could start
                for req in startable[: backend.capacity(parallelism)]:
                    trial = trials[req.trial]
                    job_spec = sweep.trial_job_spec(trial, req.epochs)
                    run_id = run_id_for(req.rung)
                    extra = backend.start(req, trial, job_spec, run_id)
                    state.runs[req.key] = {
                        "trial": req.trial, "rung": req.rung, "epochs": job_spec.training.epochs, "run_id": run_id,
                        "status": RunStatus.RUNNING, "started": now(), "backend": backend.name, **extra,
                    }
                    state.save()
                    report("started", trial=req.trial, rung=req.rung, record=state.runs[req.key])
            if not backend.active() and not startable:
                break
            for key, outcome in backend.wait(poll_seconds):
                record(key, outcome)
    except KeyboardInterrupt:
        for key, outcome in backend.stop_all():
            rec = state.runs.setdefault(key, {})
            rec.update(outcome)
        state.save()
        entries = write_leaderboard(sweep, state)
        counts, best = summarize(sweep, state.runs)
        emit(Progress("interrupted", counts, best))
        raise SweepInterrupted(SweepOutcome(str(sweep.sweep_dir), counts, best, entries, True)) from None
    except BaseException:
        for key, outcome in backend.abandon():
            state.runs.setdefault(key, {}).update(outcome)
        state.save()
        raise
    entries = write_leaderboard(sweep, state)
    counts, best = summarize(sweep, state.runs)
    emit(Progress("done", counts, best))
    return SweepOutcome(str(sweep.sweep_dir), counts, best, entries)
