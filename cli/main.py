"""`jobctl`: the Typer app. Thin: every command parses arguments and calls the library.

Each command module owns its commands and exposes `register(app)`; this file only assembles them.
Exit codes (see jobs/exit_codes.py): 0 success, 1 failure, 2 bad spec or arguments, 3 dataset missing.
"""

from __future__ import annotations

import typer

from cli import commands_k8s, commands_serving, commands_sweep, commands_train

app = typer.Typer(
    name="jobctl",
    help="Keras image-classification recipes as reproducible distributed training jobs on Kubernetes, "
    "and their ensembles served over TensorFlow Serving's gRPC API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (commands_train, commands_k8s, commands_sweep, commands_serving):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
