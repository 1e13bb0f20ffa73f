"""`jobctl`: the Typer app. Thin: every command parses arguments and calls the library.

Each command module owns its commands and exposes `register(app)`; this file only assembles them.
Exit codes (see jobs/exit_codes.py): 0 success, 1 failure, 2 bad spec or arguments, 3 dataset missing.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup

from cli import commands_data, commands_deploy, commands_k8s, commands_serving, commands_sweep, commands_train
from cli.common import fail
from jobs.errors import JobctlError


class _ErrorMappingGroup(TyperGroup):
    """The one place where the CLI turns a library error into its message and exit code (jobs/errors.py).

    Commands raise; they do not catch-and-exit one error class at a time. Anything that is not a JobctlError is a
    bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except JobctlError as exc:
            fail(str(exc), exc.exit_code)


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="jobctl",
    help="Keras image-classification recipes as reproducible distributed training jobs on Kubernetes, "
    "and their ensembles served over TensorFlow Serving's gRPC API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (commands_train, commands_data, commands_k8s, commands_sweep, commands_serving, commands_deploy):
    module.register(app)


def main() -> None:
    app()


def kubectl_plugin() -> None:
    """`kubectl jobctl ...`: kubectl runs the `kubectl-jobctl` executable it finds on PATH with the remaining
    arguments (https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/); the same commands, named as
    kubectl users type them in --help."""
    app(prog_name="kubectl jobctl")


if __name__ == "__main__":
    main()
