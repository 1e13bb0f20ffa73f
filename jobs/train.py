"""The training job's entry point: `python -m jobs.train --spec FILE` (what the container runs).

The run itself is jobs/training/loop.py; this module reads the command line and turns the outcome into the exit
code the pod failure policy keys on, through `jobs.errors.exit_code_for`: a deliberate error carries its own code
(bad spec 2, data unavailable 3, preempted 75, peer unavailable 76); anything else is unexpected and exits 1, which
Kubernetes retries (see jobs/exit_codes.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional

from jobs import exit_codes
from jobs.errors import JobctlError, Preempted, exit_code_for
from jobs.spec import JobSpec, load_spec, parse_override_pairs
from jobs.training.loop import RunResult, run  # noqa: F401 - RunResult: the result type callers of run() get

log = logging.getLogger("jobs.train")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the job spec (YAML)")
    parser.add_argument("--artifacts-dir", default=None, help="overrides spec.artifacts_dir (the PVC mount in pods)")
    parser.add_argument("--run-id", default=None, help="run directory name (default: a UTC timestamp)")
    parser.add_argument("--virtual-devices", type=int, default=0, help="split the CPU into N logical devices")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a spec field")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec = load_spec(args.spec, parse_override_pairs(args.set))
    except JobctlError as exc:
        print(exc.render() if hasattr(exc, "render") else f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    return run_with_exit_code(spec, artifacts_dir=args.artifacts_dir, run_id=args.run_id, virtual_devices=args.virtual_devices)


def run_with_exit_code(spec: JobSpec, **kwargs) -> int:
    """Train, and map the outcome to the documented exit codes in one place (the pod failure policy keys on them)."""
    from jobs.distribute import is_peer_failure

    try:
        run(spec, **kwargs)
        return exit_codes.OK
    except Preempted as exc:
        # The last backup is in <run>/backup: the retried pod (same --run-id) resumes from it.
        print(f"error: {exc}; exiting {exit_codes.PREEMPTED} (retry)", file=sys.stderr)
        return exit_codes.PREEMPTED
    except JobctlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except Exception as exc:  # noqa: BLE001 - the job's last word must be one clear line, then the code
        if is_peer_failure(exc):  # TensorFlow's own words for a worker that went away
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            print(f"error: a peer worker is unavailable ({exc.__class__.__name__}: {first}); exiting "
                  f"{exit_codes.PEER_UNAVAILABLE} (retry every worker)", file=sys.stderr)
            return exit_codes.PEER_UNAVAILABLE
        # Unexpected (a TensorFlow ValueError included): exit 1, which Kubernetes retries up to backoffLimit.
        log.exception("training failed")
        print(f"error: training failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
