"""One error taxonomy: every error jobctl raises on purpose derives from `JobctlError` and carries its exit code.

The training entry point (`python -m jobs.train`) and the CLI (`cli.main`) each map errors to exit codes in one place,
through `exit_code_for`. Anything that is not a `JobctlError` is unexpected and exits `FAILURE` (1), which Kubernetes
retries: a stray `ValueError` from TensorFlow must never fail a Job for good (it used to exit 2).

Imports nothing of the project but `jobs.exit_codes`.
"""

from __future__ import annotations

from jobs import exit_codes


class JobctlError(Exception):
    """Base of every deliberate jobctl error. The message says what was received and what was expected."""

    exit_code: int = exit_codes.FAILURE


class BadInputError(JobctlError, ValueError):
    """A spec, an argument, a file or a request is wrong: retrying cannot help (exit 2, never retried).

    Also a ValueError, so library callers that caught ValueError before keep working."""

    exit_code = exit_codes.BAD_SPEC


class DataUnavailableError(JobctlError):
    """Dataset files (or pretrained weights) are not where they must be and cannot be fetched (exit 3)."""

    exit_code = exit_codes.DATA_UNAVAILABLE


class PeerUnavailableError(JobctlError, RuntimeError):
    """A peer worker never came up or went away: the whole group should retry (exit 76)."""

    exit_code = exit_codes.PEER_UNAVAILABLE


class OperationFailedError(JobctlError, RuntimeError):
    """Something jobctl did failed for a reason outside the input (a server, the cluster, the disk): exit 1."""

    exit_code = exit_codes.FAILURE


class Preempted(BaseException):
    """SIGTERM arrived and state was saved (exit 75, retried). A BaseException so that no `except Exception` in user
    code or Keras swallows it."""

    exit_code = exit_codes.PREEMPTED


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for an error: its own for a JobctlError or Preempted, FAILURE (retried) otherwise."""
    return exc.exit_code if isinstance(exc, (JobctlError, Preempted)) else exit_codes.FAILURE
