"""Local backend: each run is a `python -m jobs.train` subprocess, at most `parallelism` at once.

Each trial gets a modest number of TensorFlow threads (cores / parallelism) so parallel trials share the cores
instead of thrashing them. Children run in their own session: a terminal Ctrl-C reaches only the sweep, which
then forwards SIGINT to its trials (jobs.train records them "interrupted"), waits a little, and kills stragglers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import jobs
from jobs import contract
from jobs.contract import RunStatus
from jobs.fsutil import atomic_write_text
from jobs.spec import JobSpec
from sweeps.search import RunRequest
from sweeps.spec import Sweep, Trial, cpu_count, default_parallelism
from sweeps.state import INTERRUPTED, now, read_run_outcome

# (spec file, artifacts dir, run id) -> argv. Tests swap in a fast fake trainer; users never need to.
Command = Callable[[Path, Path, str], Sequence[str]]


def train_command(spec_path: Path, artifacts_dir: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "jobs.train", "--spec", str(spec_path), "--artifacts-dir", str(artifacts_dir),
            "--run-id", run_id]


@dataclass
class _Proc:
    key: str
    popen: subprocess.Popen
    log: Path
    trial_name: str
    run_id: str
    log_fh: object
    started: float = field(default_factory=time.monotonic)
    terminated: Optional[float] = None  # when the trial timeout sent SIGTERM
    killed: bool = False  # SIGKILL sent once; the next polls only wait for the exit


class LocalBackend:
    name = "local"

    def __init__(
        self,
        sweep: Sweep,
        *,
        command: Optional[Command] = None,
        threads_per_trial: Optional[int] = None,
        parallelism: Optional[int] = None,
        stop_timeout: float = 15.0,
    ):
        self.sweep = sweep
        self.command = command or train_command
        # The same default as run_sweep: the cores are shared by as many trials as it runs at once.
        par = parallelism or sweep.spec.parallelism or default_parallelism()
        self.threads = threads_per_trial or sweep.spec.threads_per_trial or max(1, cpu_count() // par)
        self.stop_timeout = stop_timeout
        self.procs: dict[str, _Proc] = {}

    # ------------------------------------------------------------------------------------------- Backend
    def prepare(self) -> None:
        """Nothing to check beyond the sweep spec: trials run here exactly as validated."""

    def capacity(self, parallelism: int) -> int:
        return max(0, parallelism - len(self.procs))

    def active(self) -> set[str]:
        return set(self.procs)

    def adopt(self, key: str, record: dict) -> bool:
        return False  # a subprocess of an earlier sweep process cannot be waited for: run it again

    def start(self, req: RunRequest, trial: Trial, spec: JobSpec, run_id: str) -> dict:
        tdir = self.sweep.sweep_dir / "trials" / trial.id
        spec_path = atomic_write_text(tdir / f"{run_id}.yaml", spec.to_yaml())
        log = tdir / f"{run_id}.log"
        # A metrics.json left by an interrupted attempt must not be read as this attempt's result.
        contract.metrics_path(self.sweep.artifacts_dir, spec.name, run_id).unlink(missing_ok=True)
        argv = list(self.command(spec_path, self.sweep.artifacts_dir, run_id))
        fh = open(log, "a")  # a promoted or rerun attempt goes on in the same log
        popen = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self._env(),
            start_new_session=True,
        )
        self.procs[req.key] = _Proc(req.key, popen, log, spec.name, run_id, fh)
        return {"log": str(log), "pid": popen.pid, "spec_file": str(spec_path)}

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while True:
            self._enforce_trial_timeout()
            done = [p for p in self.procs.values() if p.popen.poll() is not None]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return [(p.key, self._finish(p)) for p in done]

    def _enforce_trial_timeout(self) -> None:
        """SIGTERM a trial past `trial_timeout_seconds` (jobs.train saves and exits), SIGKILL it `stop_timeout`
        later if it is still there."""
        limit = self.sweep.spec.trial_timeout_seconds
        if not limit:
            return
        now_ = time.monotonic()
        for p in self.procs.values():
            if p.popen.poll() is not None:
                continue
            if p.terminated is None and now_ - p.started > limit:
                p.terminated = now_
                self._signal(p, signal.SIGTERM)
            elif p.terminated is not None and not p.killed and now_ - p.terminated > self.stop_timeout:
                p.killed = True
                self._signal(p, signal.SIGKILL)

    def stop(self, key: str) -> None:
        """SIGTERM: jobs.train saves its backup and exits (75); the outcome comes back through `wait`."""
        p = self.procs.get(key)
        if p is not None:
            self._signal(p, signal.SIGTERM)

    def stop_all(self, reason: str = "stopped by Ctrl-C or SIGTERM") -> list[tuple[str, dict]]:
        for p in self.procs.values():
            self._signal(p, signal.SIGINT)
        deadline = time.monotonic() + self.stop_timeout
        try:
            while any(p.popen.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting, kill now
        for p in self.procs.values():
            if p.popen.poll() is None:
                self._signal(p, signal.SIGKILL)
                p.popen.wait()
        out = []
        for p in list(self.procs.values()):
            outcome = self._finish(p)
            if outcome["status"] != RunStatus.SUCCEEDED:
                # Stopped by us, whatever the child managed to record: it runs again on resume.
                outcome["status"] = INTERRUPTED
                outcome["error"] = reason
            out.append((p.key, outcome))
        return out

    def abandon(self) -> list[tuple[str, dict]]:
        return self.stop_all("stopped: the sweep process failed")  # a subprocess must not outlive the sweep that would record it

    # ------------------------------------------------------------------------------------------ helpers
    def _finish(self, p: _Proc) -> dict:
        self.procs.pop(p.key, None)
        p.log_fh.close()
        outcome = read_run_outcome(
            self.sweep.artifacts_dir, p.trial_name, p.run_id, self.sweep.spec.objective.metric,
            exit_code=p.popen.returncode, log_path=p.log,
        ) | {"finished": now()}
        if p.terminated is not None and outcome.get("status") != RunStatus.SUCCEEDED:
            # Final, as Kubernetes' activeDeadlineSeconds is: a resumed sweep does not run it again.
            outcome["status"] = RunStatus.FAILED
            outcome["timed_out"] = True
            outcome["error"] = (f"timed out: still running after {self.sweep.spec.trial_timeout_seconds} s "
                                "(sweep trial_timeout_seconds)")
        return outcome

    @staticmethod
    def _signal(p: _Proc, sig: int) -> None:
        try:
            os.killpg(p.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        root = str(Path(jobs.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        t = str(self.threads)
        env.update({
            "TF_NUM_INTRAOP_THREADS": t, "TF_NUM_INTEROP_THREADS": "1" if self.threads <= 2 else "2",
            "OMP_NUM_THREADS": t, "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
            "PYTHONUNBUFFERED": "1",
        })
        return env
