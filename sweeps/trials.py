"""The scheduler's side of the Optuna study: trials asked (proposed by TPE or GP, or the planned grid and random
ones enqueued in order), epochs reported, pruning and Hyperband rungs judged, results told.

Every trial of sweep.json carries its Optuna trial `number`; the study (sweeps/study.py) is the sampler's and the
pruner's memory, sweep.json the scheduler's. `sync` makes them agree after a crash between the two writes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from jobs import exit_codes
from jobs.contract import RunStatus
from sweeps import study as studies
from sweeps.search import PAUSED, last_run, run_key, walk
from sweeps.spec import Trial, trial_problems
from sweeps.state import now

if TYPE_CHECKING:
    from sweeps.spec import Sweep
    from sweeps.state import SweepState


class TrialBook:
    def __init__(self, sweep: "Sweep", state: "SweepState", *, restart: bool = False):
        self.sweep = sweep
        self.state = state
        self.study = studies.open_study(sweep, restart=restart)
        self.dists = studies.distributions(sweep.params)
        self._rungs: dict[str, list[int]] = {}
        self.rung_reached: dict[str, int] = {}  # trial -> the rung report_epochs last answered "paused" for

    # ----------------------------------------------------------------------------------------- proposing
    def can_propose(self) -> bool:
        return not self.sweep.planned and len(self.state.trials) < self.sweep.max_trials

    def propose(self) -> Optional[str]:
        """Ask the sampler for the next trial (tpe, gp). A combination the job spec rejects is recorded failed and
        told, so the model learns to avoid it; the sweep goes on."""
        if not self.can_propose():
            return None
        trial = self.study.ask(self.dists)
        tid = self.sweep.trial_id(len(self.state.trials))
        params = {k: studies.decode(self.sweep.params[k], trial.params[k]) for k in self.sweep.params}
        self.state.trials[tid] = {"name": self.sweep.trial_name(tid), "params": params, "number": trial.number}
        problems = trial_problems(self.sweep, Trial(tid, params))
        if problems:
            self.state.runs[run_key(tid, 0)] = {
                "trial": tid, "attempt": 0, "run_id": "r0", "status": RunStatus.FAILED, "finished": now(),
                "exit_code": exit_codes.BAD_SPEC, "error": "the job spec rejects this combination: " + "; ".join(problems),
            }
            self._tell_state(tid, "fail")
        self.state.save()
        return tid

    def ensure_asked(self, tid: str) -> None:
        """A planned trial enters the study when it first runs: enqueued with its parameters, then asked."""
        info = self.state.trials[tid]
        if info.get("number") is not None:
            return
        params = {k: studies.encode(v) for k, v in info["params"].items()}
        self.study.enqueue_trial(params, skip_if_exists=False)
        info["number"] = self.study.ask(self.dists).number
        self.state.save()

    # ------------------------------------------------------------------------------------------ reporting
    def _frozen(self, tid: str):
        number = self.state.trials[tid]["number"]
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return self.study._storage.get_trial(trial_id)

    def report_epochs(self, tid: str, history: dict, *, judge: bool = True) -> Optional[str]:
        """Report the run's new epochs; returns "pruned" (stop it), "paused" (a Hyperband rung) or None."""
        metric = self.sweep.epoch_metric
        if metric is None or self.state.trials[tid].get("number") is None:
            return None
        values = history.get(metric) or []
        frozen = self._frozen(tid)
        if frozen.state.is_finished():
            return None
        handle = studies.trial_handle(self.study, frozen.number)
        new = [(i + 1, v) for i, v in enumerate(values)
               if i + 1 not in frozen.intermediate_values and isinstance(v, (int, float)) and math.isfinite(v)]
        hyperband = self.sweep.spec.pruner.type == "hyperband"
        for step, v in new:
            handle.report(float(v), step)
            # Optuna's pruners judge the trial's last reported step. A poll that arrives epochs late must still judge
            # each rung on the value at that rung, or a trial that reported late competes with later, better epochs.
            if judge and not hyperband and handle.should_prune():
                return "pruned"
        if not judge or not new or not hyperband:
            return None
        _, rec = last_run(self.state.runs, tid)
        decided = (rec or {}).get("rungs") or []
        # The first undecided rung among the new epochs: a poll that arrives after the trial passed its rung still
        # pauses it there (judged on the rung's value; it resumes from its later backup if promoted).
        reached = [step for step, _ in new if step in self.rungs(tid) and step not in decided]
        if reached:
            self.rung_reached[tid] = reached[0]
            return "paused"
        return None

    def rungs(self, tid: str) -> list[int]:
        """The epochs where a Hyperband trial pauses: its bracket's rungs below the full budget."""
        if tid not in self._rungs:
            p = self.sweep.spec.pruner
            rate = 0
            try:  # Optuna's bracket for this trial (private API; bracket 0's rungs if it moves)
                pruner = self.study.pruner
                if not pruner._pruners:
                    pruner._try_initialization(self.study)
                bracket = pruner._get_bracket_id(self.study, self._frozen(tid))
                rate = pruner._pruners[bracket]._min_early_stopping_rate
            except (AttributeError, IndexError, TypeError):
                pass
            out, epochs = [], p.min_epochs * p.reduction_factor ** rate
            while epochs < p.max_epochs:
                out.append(epochs)
                epochs *= p.reduction_factor
            self._rungs[tid] = out
        return self._rungs[tid]

    def judge_rung(self, tid: str, epoch: int, *, force: bool) -> Optional[RunStatus]:
        """A paused trial's rung: judged once `reduction_factor` trials have reached it (or no other can), by the
        Hyperband pruner: PRUNED, or PROMOTED (RUNNING here) to go on. None: wait for more peers."""
        peers = sum(1 for t in self.study.get_trials(deepcopy=False) if epoch in t.intermediate_values)
        if peers < self.sweep.spec.pruner.reduction_factor and not force:
            return None
        handle = studies.trial_handle(self.study, self.state.trials[tid]["number"])
        return RunStatus.PRUNED if handle.should_prune() else RunStatus.RUNNING

    # -------------------------------------------------------------------------------------------- telling
    def _tell_state(self, tid: str, kind: str, value: Optional[float] = None) -> None:
        from optuna.trial import TrialState

        frozen = self._frozen(tid)
        if frozen.state.is_finished():
            return  # told before a crash, or by the other half of a retry
        if kind == "complete":
            self.study.tell(frozen.number, value)
        else:
            self.study.tell(frozen.number, state=TrialState.PRUNED if kind == "pruned" else TrialState.FAIL)

    def tell(self, tid: str, rec: dict, *, final: bool) -> None:
        if self.state.trials[tid].get("number") is None:
            return
        status = rec.get("status")
        if status == RunStatus.SUCCEEDED and rec.get("value") is not None:
            self._tell_state(tid, "complete", rec["value"])
        elif status == RunStatus.PRUNED:
            self._tell_state(tid, "pruned")
        elif status == RunStatus.FAILED and final:
            self._tell_state(tid, "fail")

    def tell_pruned(self, tid: str) -> None:
        self._tell_state(tid, "pruned")

    def sync(self) -> None:
        """Results sweep.json has and the study lacks (the process died between the two writes) are told now."""
        _, states = walk(self.sweep, self.state.trials, self.state.runs)
        for tid, s in states.items():
            if self.state.trials[tid].get("number") is None or s["record"] is None:
                continue
            if s["status"] in (RunStatus.SUCCEEDED, RunStatus.PRUNED, RunStatus.FAILED):
                self.tell(tid, s["record"], final=True)
            elif s["status"] == PAUSED:
                pass  # still RUNNING in the study: judged when its rung is
