"""Helpers every command module shares: one console, spec loading, output-path checks.

Errors are raised (jobs.errors), never turned into exit codes here: cli.main's group maps them in one place.
Nothing here imports TensorFlow: `jobctl --help`, `validate`, `render`, `status` must start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console

from jobs import exit_codes
from jobs.errors import BadInputError, OperationFailedError

# Pipes and CI logs get wide, unwrapped lines: an error message must stay greppable on one line.
_width = None if sys.stdout.isatty() else 200
console = Console(width=_width, soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200, soft_wrap=True)


def fail(message: str, code: int = exit_codes.FAILURE) -> NoReturn:
    from rich.markup import escape

    # The message is data (paths, API errors with [field] lists), never markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def parse_overrides(pairs: Optional[list[str]]) -> dict[str, Any]:
    """`--set training.learning_rate=0.01` pairs; values are parsed as YAML so numbers and lists work."""
    from jobs.spec import parse_override_pairs

    return parse_override_pairs(pairs or [])


def load_job_spec(path: Path, overrides: Optional[dict[str, Any]] = None):
    """jobs.spec.load_spec, imported when a command runs (pydantic stays out of `jobctl --help`)."""
    from jobs.spec import load_spec

    return load_spec(path, overrides)


def _first_existing_parent_must_be_a_dir(path: Path, option: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadInputError(f"{option} {path}: {parent} is a file, not a directory")
            return


def check_output_dir(path: Path, option: str) -> None:
    """An output directory option, checked before any work: an existing file there is an error, not a traceback."""
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{option} {path}: is a file; expected a directory (created when missing)")
    _first_existing_parent_must_be_a_dir(path, option)


def check_output_file(path: Path, option: str) -> None:
    """An output file option, checked before any work: an existing directory there is an error."""
    if path.is_dir():
        raise BadInputError(f"{option} {path}: is a directory; expected a file path")
    _first_existing_parent_must_be_a_dir(path, option)


def write_manifests_or_exit(objects: list[dict], out_dir: Path, option: str) -> None:
    """One YAML file per object in `out_dir` (k8s.manifests.write_manifests), each path printed; a directory that
    cannot be written is one error (exit 1)."""
    from k8s.manifests import write_manifests

    try:
        for path in write_manifests(objects, out_dir):
            console.print(f"wrote {path}", highlight=False)
    except OSError as exc:
        raise OperationFailedError(f"{option} {out_dir}: cannot write the manifests ({exc.strerror or exc})") from exc
