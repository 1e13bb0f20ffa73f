"""`jobctl data describe | pack`: check a spec's data as training will load it, and pack images into TFRecord shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import console, load_spec_or_exit

data_app = typer.Typer(help="Check and pack training data.", no_args_is_help=True)


@data_app.command("describe")
def describe(spec: Path = typer.Option(..., "--spec", help="job spec YAML")) -> None:
    """Load a spec's data exactly as training will (downloading what is missing) and print splits, shape, classes.

    The same as `python -m jobs.data --spec FILE` in the training image. Exit 2 bad spec or data, 3 data missing."""
    import logging

    from jobs.datasets.describe import describe as describe_data

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for line in describe_data(load_spec_or_exit(spec).data):
        console.print(line, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
