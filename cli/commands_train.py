"""Placeholder: init, validate, train, export, runs."""

import typer


def register(app: typer.Typer) -> None:
    pass
