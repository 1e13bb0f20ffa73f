"""Errors of the sweep controller, in jobctl's taxonomy (jobs/errors.py): the CLI maps them to exit codes in one place."""

from __future__ import annotations

from jobs.errors import BadInputError, OperationFailedError


class SweepError(BadInputError):
    """A sweep that cannot start or be read (another sweep in its directory, an unreadable state file, no
    leaderboard yet): exit 2. The message says what was found and what to do."""


class NotEnoughTrialsError(OperationFailedError):
    """Fewer succeeded trials than asked for (`jobctl best --top K`): exit 1, the sweep may still produce them."""


class SweepBusyError(OperationFailedError):
    """Another `jobctl sweep` process holds the sweep directory's lock: exit 1, retry when it has finished."""


class ClusterError(OperationFailedError):
    """The Kubernetes API failed the sweep (unreachable, forbidden, a Job it rejects): exit 1. The sweep state is
    saved, so the same command resumes."""
