"""The sweep scheduler: asks the study for trials, starts their runs on a backend within `parallelism`, reports
each run's epochs to the pruner and stops the ones it prunes, records every outcome in the sweep state (atomically,
after each change) and tells the study, and keeps the leaderboard current.

Backends (sweeps/backends/local.py, sweeps/backends/kubernetes.py) only start, watch and stop runs; every decision
(what next, what is pruned, paused or promoted, what counts as done) is taken here, in sweeps/search.py and by the
Optuna study (sweeps/trials.py, sweeps/study.py), so both backends and a resumed sweep behave the same.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from jobs import contract
from jobs.contract import RunStatus
from jobs.spec import JobSpec
from sweeps.leaderboard import write_leaderboard
from sweeps.lock import SweepLock
from sweeps.search import (
    FINISHED,
    INTERRUPTED,
    PAUSED,
    PROMOTED,
    RunRequest,
    parse_run_key,
    run_key,
    walk,
)
from sweeps.spec import Sweep, Trial, default_parallelism
from sweeps.state import SweepState, backed_up_epochs, epochs_reached, now, read_history
from sweeps.trials import TrialBook

COUNT_KEYS = (RunStatus.SUCCEEDED, RunStatus.PRUNED, RunStatus.FAILED, RunStatus.RUNNING, PAUSED, RunStatus.PENDING)


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

    def stop(self, key: str) -> None:
        """Stop one run now (pruned, paused at a rung): local SIGTERM, Kubernetes deletes its Job. Its outcome
        comes back through `wait`."""

    def adopt(self, key: str, record: dict) -> bool:
        """A run recorded as running by an earlier sweep process: watch it if it still runs."""

    def stop_all(self) -> list[tuple[str, dict]]:
        """Stop every active run (Ctrl-C); return their outcomes (status "interrupted")."""

    def abandon(self) -> list[tuple[str, dict]]:
        """The sweep failed (an API error, a bug): stop what cannot outlive this process, return its outcomes."""


@dataclass
class Progress:
    kind: str  # "resumed" | "started" | "finished" | "pruned" | "paused" | "promoted" | "interrupted" | "done"
    counts: dict[str, int]
    best: Optional[dict] = None  # {"trial", "value", "params"}
    trial: Optional[str] = None
    attempt: Optional[int] = None
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


def summarize(sweep: Sweep, state: SweepState) -> tuple[dict[str, int], Optional[dict]]:
    _, states = walk(sweep, state.trials, state.runs)
    counts = {str(k): 0 for k in COUNT_KEYS}
    for s in states.values():
        counts[str(s["status"])] += 1
    counts[str(RunStatus.PENDING)] += max(0, sweep.max_trials - len(states))  # not proposed yet
    counts["total"] = max(sweep.max_trials, len(states))
    obj = sweep.spec.objective
    best = None
    for tid, s in states.items():
        v = (s["record"] or {}).get("value")
        if s["status"] == RunStatus.SUCCEEDED and v is not None and (best is None or obj.better(v, best["value"])):
            best = {"trial": tid, "value": v, "params": state.trials[tid]["params"]}
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
    """Run (or resume) `sweep` to the end. Ctrl-C stops the active runs and raises SweepInterrupted. Another
    sweep process on the same directory makes this one refuse (SweepBusyError) before it touches anything."""
    with SweepLock(sweep.sweep_dir):
        return _Scheduler(sweep, backend, parallelism, restart, on_progress, poll_seconds).run()


class _Scheduler:
    def __init__(self, sweep, backend, parallelism, restart, on_progress, poll_seconds):
        self.sweep = sweep
        self.backend = backend
        self.parallelism = parallelism or sweep.spec.parallelism or default_parallelism()
        self.restart = restart
        self.emit = on_progress or (lambda p: None)
        self.poll = poll_seconds
        self.stopping: dict[str, tuple[str, int]] = {}  # run key -> (pruned | paused, epoch), until it has exited
        self.pausing: dict[str, int] = {}  # run key -> the rung it pauses at, once its backup has it

    def report(self, kind: str, **kw) -> None:
        counts, best = summarize(self.sweep, self.state)
        self.emit(Progress(kind, counts, best, **kw))

    def save(self) -> list[dict]:
        self.state.save()
        return write_leaderboard(self.sweep, self.state)

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> SweepOutcome:
        sweep, backend = self.sweep, self.backend
        backend.prepare()
        self.state = SweepState.open(sweep, restart=self.restart)
        self.book = TrialBook(sweep, self.state, restart=self.restart)
        # Runs an earlier process left "running": a backend that can still see them keeps watching, else they rerun.
        for key, rec in self.state.runs.items():
            if rec.get("status") == RunStatus.RUNNING and not backend.adopt(key, rec):
                rec["status"] = INTERRUPTED
                rec.setdefault("error", "the sweep process stopped while this run was active")
        self.book.sync()  # results recorded but not told (a crash in between) reach the study now
        skipped = sum(1 for r in self.state.runs.values() if r.get("status") in FINISHED)
        rerun = sum(1 for r in self.state.runs.values() if r.get("status") == INTERRUPTED)
        self.save()  # `jobctl results` works from the first second
        if skipped or rerun:
            self.report("resumed", skipped=skipped, rerun=rerun)
        try:
            while True:
                requests, states = walk(sweep, self.state.trials, self.state.runs)
                active = backend.active()
                startable = [r for r in requests if r.key not in active]
                can_ask = self.book.can_propose()
                if startable or can_ask:  # capacity() may cost a Kubernetes list call: ask only when useful
                    free = backend.capacity(self.parallelism)
                    for req in startable[:free]:
                        self._start(req)
                    for _ in range(max(0, free - len(startable))):
                        tid = self.book.propose()
                        if tid is None:
                            break
                        if self.state.runs.get(run_key(tid, 0), {}).get("status") == RunStatus.FAILED:
                            self.report("finished", trial=tid, attempt=0, record=self.state.runs[run_key(tid, 0)])
                            continue  # the job spec rejects this combination: recorded, told, next
                        self._start(RunRequest(tid, 0))
                self._watch_epochs()
                waiting = self._decide_paused(nothing_else=not backend.active() and not startable and not can_ask)
                startable = [r for r in walk(sweep, self.state.trials, self.state.runs)[0] if r.key not in active]
                if not backend.active() and not startable and not self.book.can_propose() and not waiting:
                    break  # (a trial just promoted is startable: it resumes on the next turn)
                for key, outcome in backend.wait(self.poll):
                    self._record(key, outcome)
        except KeyboardInterrupt:
            for key, outcome in backend.stop_all():
                self.state.runs.setdefault(key, {}).update(outcome)
            entries = self.save()
            counts, best = summarize(sweep, self.state)
            self.emit(Progress("interrupted", counts, best))
            raise SweepInterrupted(SweepOutcome(str(sweep.sweep_dir), counts, best, entries, True)) from None
        except BaseException:
            for key, outcome in backend.abandon():
                self.state.runs.setdefault(key, {}).update(outcome)
            self.state.save()
            raise
        entries = self.save()
        counts, best = summarize(sweep, self.state)
        self.emit(Progress("done", counts, best))
        return SweepOutcome(str(sweep.sweep_dir), counts, best, entries)

    # ------------------------------------------------------------------------------------------ helpers
    def _start(self, req: RunRequest) -> None:
        sweep = self.sweep
        info = self.state.trials[req.trial]
        trial = Trial(req.trial, info["params"])
        job_spec = sweep.trial_job_spec(trial)
        self.book.ensure_asked(req.trial)
        previous = self.state.runs.get(req.key)
        if req.resume and not sweep.spec.pruner.warm_start:
            # Cold Hyperband (keras-tuner's way, for comparison): the promoted trial trains again from epoch 1.
            shutil.rmtree(contract.run_dir(sweep.artifacts_dir, job_spec.name, req.run_id), ignore_errors=True)
        extra = self.backend.start(req, trial, job_spec, req.run_id)
        self.state.runs[req.key] = {
            "trial": req.trial, "attempt": req.attempt, "epochs": job_spec.training.epochs, "run_id": req.run_id,
            "status": RunStatus.RUNNING, "started": now(), "backend": self.backend.name, **extra,
        }
        if previous and previous.get("rungs"):
            self.state.runs[req.key]["rungs"] = previous["rungs"]
        self.state.save()
        self.report("started", trial=req.trial, attempt=req.attempt,
                    record=self.state.runs[req.key])

    def _watch_epochs(self) -> None:
        """Each active run's new epochs go to the pruner; a pruned run is stopped, a Hyperband run that reached
        one of its rungs is paused (stopped with its backup saved) until the rung is decided."""
        for key in sorted(self.backend.active()):
            if key in self.stopping:
                continue
            tid, attempt = parse_run_key(key)
            rec = self.state.runs[key]
            history = read_history(self.sweep.artifacts_dir, self.state.trials[tid]["name"], rec["run_id"])
            decision = self.book.report_epochs(tid, history)
            if decision == "paused":
                self.pausing[key] = self.book.rung_reached.pop(tid, epochs_reached(history))
            elif decision is not None:
                self.stopping[key] = (decision, epochs_reached(history))
                self.backend.stop(key)
            rung = self.pausing.get(key)
            # Paused only once its backup holds the rung: stopped earlier, it would train the rung's epoch again.
            if rung and backed_up_epochs(self.sweep.artifacts_dir, self.state.trials[tid]["name"], rec["run_id"]) >= rung:
                del self.pausing[key]
                self.stopping[key] = ("paused", rung)
                self.backend.stop(key)

    def _decide_paused(self, nothing_else: bool) -> int:
        """Paused trials whose rung can be judged now: pruned, or promoted to resume. Returns how many still wait."""
        waiting = 0
        for tid, info in self.state.trials.items():
            attempt_key = next((k for k, r in self.state.runs.items()
                                if r.get("trial") == tid and r.get("status") == PAUSED), None)
            if attempt_key is None:
                continue
            rec = self.state.runs[attempt_key]
            verdict = self.book.judge_rung(tid, rec["epoch"], force=nothing_else)
            if verdict is None:
                waiting += 1
                continue
            if verdict == RunStatus.PRUNED:
                rec.update(status=RunStatus.PRUNED, finished=now())
                self.book.tell_pruned(tid)
            else:
                rec.update(status=PROMOTED)
                rec.setdefault("rungs", []).append(rec["epoch"])
            self.save()
            self.report("pruned" if verdict == RunStatus.PRUNED else "promoted", trial=tid,
                        attempt=parse_run_key(attempt_key)[1], record=rec)
        return waiting

    def _record(self, key: str, outcome: dict) -> None:
        tid, attempt = parse_run_key(key)
        rec = self.state.runs.setdefault(key, {})
        history = read_history(self.sweep.artifacts_dir, self.state.trials[tid]["name"], rec.get("run_id", f"r{attempt}"))
        self.book.report_epochs(tid, history, judge=False)  # epochs the last poll missed
        outcome["epoch"] = epochs_reached(history)
        if self.sweep.epoch_metric and history.get(self.sweep.epoch_metric):
            outcome["epoch_value"] = history[self.sweep.epoch_metric][-1]
        decision = self.stopping.pop(key, None)
        self.pausing.pop(key, None)
        if decision is not None and outcome.get("status") != RunStatus.SUCCEEDED:
            kind, at = decision
            if kind == "pruned":  # `epoch`: how far it got before the SIGTERM landed; `pruned_at`: the verdict's
                outcome.update(status=RunStatus.PRUNED, pruned_at=at, error=None)
            else:  # judged at its rung (its backup may hold an epoch more, which it resumes from)
                outcome.update(status=PAUSED, epoch=at, error=None)
        rec.update(outcome)
        if rec.get("status") in FINISHED:
            self.book.tell(tid, rec, final=not self._will_retry(tid))
        self.save()
        kind = {RunStatus.PRUNED: "pruned", PAUSED: "paused"}.get(rec.get("status"), "finished")
        self.report(kind, trial=tid, attempt=attempt, record=rec)

    def _will_retry(self, tid: str) -> bool:
        _, states = walk(self.sweep, {tid: self.state.trials[tid]}, self.state.runs)
        return states[tid]["status"] == RunStatus.PENDING
