"""Kubernetes backend: one Job per trial run (a JobSet when the trial's spec says distribution.backend: jobset),
built by `k8s.jobset.build_objects` and submitted with `k8s.client.JobClient` (the same objects `jobctl submit`
creates), labelled jobctl.io/sweep and jobctl.io/trial.

Parallelism is enforced by the scheduler, against the cluster: before starting a run it lists the Jobs carrying
this sweep's label and counts those not yet Complete or Failed, so Jobs left running by an earlier (crashed)
sweep process count too and the limit holds across restarts. Such Jobs are adopted on resume, not resubmitted.

Results are read back from the artifacts store: the trainer writes `runs/<trial>/<run id>/metrics.json` on the
shared PersistentVolumeClaim, which this process sees at `sweep.artifacts_dir` (run the sweep where the claim is
mounted, or mount it locally); export paths written by pods (`/artifacts/models/...`) are re-rooted there.
Ctrl-C deletes the sweep's active Jobs (their runs are rerun on resume).
"""

from __future__ import annotations

import functools
import time
from typing import Optional

from jobs import contract
from jobs.contract import METRICS_FILE, RunStatus
from jobs.spec import JobSpec
from k8s.client import TERMINAL
from sweeps.errors import ClusterError, SweepError
from sweeps.search import RunRequest, run_id_for
from sweeps.spec import Sweep, Trial
from sweeps.state import INTERRUPTED, now, read_run_outcome


def _cluster_errors(method):
    """The cluster's errors in jobctl's taxonomy, so the CLI maps them in its one place: a Job Kubernetes rejects
    is bad input (exit 2), anything else the API does is a failure (exit 1) the same command resumes from."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        from k8s.client import KubeError
        from k8s.common import ManifestError

        try:
            return method(*args, **kwargs)
        except ManifestError as exc:
            raise SweepError(str(exc)) from exc
        except KubeError as exc:
            raise ClusterError(f"Kubernetes: {exc}\nThe sweep state is saved; run the same command to resume.") from exc

    return wrapper


def job_name(sweep: Sweep, trial_id: str, attempt: int) -> str:
    # <sweep>-t003-r0: at most 40 + 6 + 3 characters, within the 52 a job name may have.
    return f"{sweep.trial_name(trial_id)}-r{attempt}"


class K8sBackend:
    name = "k8s"

    def __init__(self, sweep: Sweep, client, *, image: Optional[str] = None):
        """`client`: a k8s.client.JobClient (created lazily by it on first use; tests aim it at KMock)."""
        from k8s import common

        self.sweep = sweep
        self.client = client
        self.image = image
        self.selector = {common.LABEL_SWEEP: sweep.name}
        self.watched: dict[str, dict] = {}  # run key -> {"job", "trial_name", "run_id"}

    @classmethod
    def from_environment(cls, sweep: Sweep, *, namespace: Optional[str] = None, context: Optional[str] = None,
                         kubeconfig: Optional[str] = None, image: Optional[str] = None) -> "K8sBackend":
        from k8s.client import JobClient

        return cls(sweep, JobClient(namespace, context=context, kubeconfig=kubeconfig), image=image)

    def objects(self, trial: Trial, spec: JobSpec, attempt: int, run_id: str) -> list[dict]:
        from k8s.jobset import build_objects

        # The trial's own distribution.backend (an Indexed Job, or a JobSet), as `jobctl submit` would build it.
        # jobctl.io/sweep and jobctl.io/trial come from spec.labels (Sweep.trial_data sets them).
        return build_objects(spec, run_id=run_id, name=job_name(self.sweep, trial.id, attempt), image=self.image)

    # ------------------------------------------------------------------------------------------- Backend
    @_cluster_errors
    def prepare(self) -> None:
        """Render every trial's Job before anything is created: a spec Kubernetes rejects fails the sweep now."""
        from k8s.common import ManifestError

        problems = []
        # Planned trials (grid, random) each. A proposed one (tpe, gp) is rendered when it starts; here a stand-in
        # at the space's lower ends catches what the base spec and the sweep's labels alone get wrong.
        from sweeps.space import boundary_values

        trials = self.sweep.trials or [Trial(self.sweep.trial_id(0), {k: boundary_values(p)[0]
                                                                      for k, p in self.sweep.params.items()})]
        for t in trials:
            try:
                self.objects(t, self.sweep.trial_job_spec(t), 0, run_id_for(0))
            except ManifestError as exc:
                problems.append(f"trial {t.id}: {exc}")
        if problems:
            raise ManifestError("\n".join(problems))

    def active_jobs(self) -> dict[str, str]:
        """This sweep's Jobs by name -> state, counted through the sweep label (one list call)."""
        return {r.name: r.state for r in self.client.list(self.selector)}

    @_cluster_errors
    def capacity(self, parallelism: int) -> int:
        running = sum(1 for state in self.active_jobs().values() if state not in TERMINAL)
        return max(0, parallelism - running)

    def active(self) -> set[str]:
        return set(self.watched)

    @_cluster_errors
    def start(self, req: RunRequest, trial: Trial, spec: JobSpec, run_id: str) -> dict:
        from k8s.client import ConflictError

        objects = self.objects(trial, spec, req.attempt, run_id)
        name = job_name(self.sweep, trial.id, req.attempt)
        # A metrics.json of an interrupted attempt must not be read as this attempt's result.
        try:
            contract.metrics_path(self.sweep.artifacts_dir, spec.name, run_id).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only mount of the claim: the pod's trainer overwrites it anyway
        try:
            self.client.submit(objects)
        except ConflictError:
            # Left by an earlier attempt that this sweep stopped or lost track of: start it afresh.
            self.client.submit(objects, replace=True)
        self.watched[req.key] = {"job": name, "trial_name": spec.name, "run_id": run_id}
        return {"job": name, "namespace": self.client.namespace}

    @_cluster_errors
    def stop(self, key: str) -> None:
        """Delete the run's Job (its pods get SIGTERM); `wait` then finds it gone and reads what it recorded."""
        from k8s.client import NotFoundError

        w = self.watched.get(key)
        if w is not None:
            try:
                self.client.delete(w["job"])
            except NotFoundError:
                pass

    @_cluster_errors
    def adopt(self, key: str, record: dict) -> bool:
        from k8s.client import NotFoundError

        name = record.get("job")
        if not name:
            return False
        try:
            self.client.status(name)
        except NotFoundError:
            return False
        self.watched[key] = {"job": name, "trial_name": self.sweep.trial_name(record["trial"]), "run_id": record["run_id"]}
        return True

    @_cluster_errors
    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        time.sleep(timeout)
        states = self.active_jobs()
        out = []
        for key, w in list(self.watched.items()):
            state = states.get(w["job"], "Missing")
            if state in TERMINAL or state == "Missing":
                out.append((key, self._finish(key, w, state)))
        return out

    def stop_all(self, reason: str = "stopped by Ctrl-C or SIGTERM") -> list[tuple[str, dict]]:
        from k8s.client import KubeError, NotFoundError

        out = []
        for key, w in list(self.watched.items()):
            error = f"{reason}: Job deleted"
            try:
                self.client.delete(w["job"])
            except NotFoundError:
                pass
            except KubeError as exc:
                error = f"{reason}; deleting Job {w['job']} failed: {exc}"
            self.watched.pop(key, None)
            out.append((key, {"status": INTERRUPTED, "error": error, "finished": now()}))
        return out

    def abandon(self) -> list[tuple[str, dict]]:
        return []  # Jobs keep running in the cluster; their records stay "running" and a resumed sweep adopts them

    # ------------------------------------------------------------------------------------------ helpers
    def _finish(self, key: str, w: dict, state: str) -> dict:
        from k8s.client import KubeError

        self.watched.pop(key, None)
        exit_code, detail = (0, "") if state == "Succeeded" else (None, "")
        kind = "Job"
        if state != "Succeeded":
            try:
                report = self.client.status(w["job"])
                kind = report.kind or kind  # a JobSet for distribution.backend: jobset
                detail = report.message
                pod = next((p for p in reversed(report.pods) if p.exit_code is not None or p.detail), None)
                if pod is not None:
                    exit_code = pod.exit_code
                    detail = "; ".join(x for x in (report.message, f"pod {pod.name}: {pod.state} {pod.detail}".strip()) if x)
            except KubeError as exc:
                detail = f"Job {w['job']} is gone ({exc})" if state == "Missing" else str(exc)
        outcome = read_run_outcome(
            self.sweep.artifacts_dir, w["trial_name"], w["run_id"], self.sweep.spec.objective.metric,
            exit_code=exit_code,
        )
        if outcome["status"] == RunStatus.SUCCEEDED and state != "Succeeded":
            # metrics.json says succeeded but the Job did not finish (deleted, TTL): trust the results on disk.
            outcome["job_state"] = state
        if outcome["status"] == RunStatus.FAILED and detail:
            outcome["error"] = f"{kind} {w['job']} {state.lower()}: {detail}" + (
                f" | {outcome['error']}" if outcome.get("error") and f"no {METRICS_FILE}" not in outcome["error"] else "")
        outcome["job"] = w["job"]
        return outcome
