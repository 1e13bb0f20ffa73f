"""`jobctl init | validate | train | export | runs`: the local training workflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli.common import console, err_console, load_job_spec, parse_overrides
from jobs import contract, exit_codes
from jobs.errors import BadInputError, OperationFailedError


def init(
    path: Path = typer.Argument(Path("jobctl.yaml"), help="where to write the example spec"),
    name: str = typer.Option("my-job", "--name", help="the job name (DNS-1123 label)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing file"),
) -> None:
    """Write a commented example spec that trains the seeds' CNN on the offline digits dataset."""
    from jobs.fsutil import atomic_write_text
    from jobs.spec import DNS1123_LABEL
    from jobs.spec_template import render_template

    if not DNS1123_LABEL.fullmatch(name) or len(name) > 52:
        raise BadInputError(f"--name: expected a DNS-1123 label (lower-case letters, digits, '-'), received {name!r}")
    if path.exists() and not force:
        raise BadInputError(f"{path} already exists; use --force to overwrite it")
    try:
        atomic_write_text(path, render_template(name, str(path)))
    except OSError as exc:
        raise OperationFailedError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    console.print(f"wrote {path}; next: jobctl validate {path} && jobctl train {path}", highlight=False)


def validate(
    specs: List[Path] = typer.Argument(..., help="spec files to check"),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="FIELD.PATH=VALUE, applied before validating"),
    show: bool = typer.Option(False, "--show", help="print the resolved spec with every default filled in"),
) -> None:
    """Check specs; every problem is reported with its field path. Exit code 2 when any spec is invalid."""
    from jobs.spec import SpecError, load_spec

    bad = 0
    for path in specs:
        try:
            spec = load_spec(path, parse_overrides(overrides))
        except SpecError as exc:
            bad += 1
            err_console.print(exc.render(), highlight=False, markup=False)
            continue
        console.print(
            f"{path}: ok ({spec.name}: {spec.model.type} on {spec.data.dataset}, {spec.training.epochs} epochs, "
            f"{spec.resources.workers} worker(s) x {spec.resources.gpus} GPU)",
            highlight=False,
        )
        from k8s.sizing import gpu_waste_warnings  # pure; no cluster client

        for warning in gpu_waste_warnings(spec):  # never blocking: a small batch can be a choice
            err_console.print(f"warning: {path}: {warning}", highlight=False, markup=False)
        if show:
            console.print(spec.to_yaml(), highlight=False, markup=False)
    if bad:
        raise typer.Exit(exit_codes.BAD_SPEC)


def train(
    spec_path: Path = typer.Argument(..., metavar="SPEC", help="the job spec (YAML)"),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="FIELD.PATH=VALUE overrides"),
    artifacts_dir: Optional[Path] = typer.Option(None, "--artifacts-dir", help="overrides spec.artifacts_dir"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="run directory name (default: UTC timestamp)"),
    virtual_devices: int = typer.Option(
        0, "--virtual-devices", min=0, help="split the CPU into N logical devices (MirroredStrategy without GPUs)"
    ),
) -> None:
    """Train locally: the same code the training container runs (`python -m jobs.train`)."""
    spec = load_job_spec(spec_path, parse_overrides(overrides))
    from jobs.train import run_with_exit_code  # TensorFlow loads here, not at CLI start-up

    code = run_with_exit_code(
        spec, artifacts_dir=str(artifacts_dir) if artifacts_dir else None, run_id=run_id, virtual_devices=virtual_devices
    )
    raise typer.Exit(code)


def export(
    run_dir: Path = typer.Argument(..., help="a finished run directory (artifacts/runs/<name>/<run-id>)"),
    export_root: Optional[Path] = typer.Option(None, "--export-root", help="default: <artifacts>/models"),
    version: str = typer.Option("increment", "--version", help="increment | timestamp | an integer"),
) -> None:
    """Re-export a run's best checkpoint as a new SavedModel version (TF Serving layout)."""
    if version not in ("increment", "timestamp") and not (version.isdigit() and int(version) >= 1):
        raise BadInputError(f"--version: expected 'increment', 'timestamp' or a positive integer, received {version!r}")
    from jobs.reexport import reexport_run  # RunNotExportable and ExportError are BadInputErrors: exit 2

    path = reexport_run(run_dir, export_root, int(version) if version.isdigit() else version)
    console.print(f"export: {path}", highlight=False)


def list_runs(artifacts_dir: Path) -> list[dict]:
    rows = []
    runs_root = contract.runs_root(artifacts_dir)
    for metrics_file in sorted(runs_root.glob(f"*/*/{contract.METRICS_FILE}")):
        try:
            m = json.loads(metrics_file.read_text())
        except (OSError, json.JSONDecodeError):
            m = {"status": "unreadable"}
        rows.append({"name": metrics_file.parent.parent.name, "run_id": metrics_file.parent.name, **m})
    for run_dir in sorted(runs_root.glob("*/*/")):
        if run_dir.is_dir() and not (run_dir / contract.METRICS_FILE).exists():
            rows.append({"name": run_dir.parent.name, "run_id": run_dir.name, "status": "running or killed"})
    return sorted(rows, key=lambda r: (r["name"], r["run_id"]))


def runs(
    artifacts_dir: Path = typer.Option(Path("artifacts"), "--artifacts-dir", help=f"where {contract.RUNS_DIR}/ lives"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Local runs and their metrics."""
    rows = list_runs(artifacts_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print(f"no runs under {contract.runs_root(artifacts_dir)}", highlight=False)
        return
    table = Table("name", "run", "status", "best epoch", "val acc", "test acc", "time", "export")

    def fmt(v, spec=".4f"):
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    for r in rows:
        table.add_row(
            r["name"], r["run_id"], r.get("status", "?"), str(r.get("best_epoch", "-")), fmt(r.get("best_val_accuracy")),
            fmt(r.get("test_accuracy")), fmt(r.get("wall_time_seconds"), ".0f") + ("s" if "wall_time_seconds" in r else ""),
            r.get("export_path") or "-",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(validate)
    app.command()(train)
    app.command()(export)
    app.command()(runs)
