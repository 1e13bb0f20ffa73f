"""`jobctl data describe | pack`: check a spec's data as training will load it, and pack images into TFRecord shards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import console, err_console, load_job_spec
from jobs.errors import BadInputError

data_app = typer.Typer(help="Check and pack training data.", no_args_is_help=True)


@data_app.command("describe")
def describe(spec: Path = typer.Option(..., "--spec", help="job spec YAML")) -> None:
    """Load a spec's data exactly as training will (downloading what is missing) and print splits, shape, classes.

    The same as `python -m jobs.data --spec FILE` in the training image. Exit 2 bad spec or data, 3 data missing."""
    import logging

    from jobs.datasets.describe import describe as describe_data

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for line in describe_data(load_job_spec(spec).data):
        console.print(line, highlight=False, markup=False)


def _parse_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise BadInputError(f"--resize: expected HEIGHTxWIDTH in pixels (e.g. 256x256), received {text!r}")
    return int(parts[0]), int(parts[1])


@data_app.command("pack")
def pack(
    folder: Optional[Path] = typer.Argument(None, help="an image folder (root/<class>/<image>, or root/train + root/test)"),
    spec_path: Optional[Path] = typer.Option(None, "--spec", help="pack the data a spec names (any dataset but tfrecord)"),
    out: Path = typer.Option(..., "-o", "--out", help="the directory to write (empty, or an interrupted pack to resume)"),
    encoding: str = typer.Option("jpeg", "--encoding", help="jpeg | png | raw (uint8 pixels)"),
    resize: Optional[str] = typer.Option(None, "--resize", help="HEIGHTxWIDTH to store (default: the spec's data.resize, "
                                         "else the images' own size)"),
    shard_size: int = typer.Option(1024, "--shard-size", help="examples per shard"),
    quality: int = typer.Option(90, "--quality", help="JPEG quality"),
    workers: int = typer.Option(0, "--workers", help="parallel shard writers (0: one per core)"),
    split_seed: int = typer.Option(0, "--split-seed", help="folder: seeds the held-out splits (data.split_seed)"),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="folder without train/ and test/: test share per class"),
    validation_fraction: float = typer.Option(0.2, "--validation-fraction", help="folder: validation share of the training images"),
) -> None:
    """Pack images into sharded TFRecords plus dataset.json, for `data.dataset: tfrecord` (docs/data.md).

    The split is fixed here. Run the same command again to resume an interrupted pack (complete shards whose
    checksums match are kept). Exit 2 on bad arguments or a directory that holds other data, 3 when the data is missing."""
    import logging

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jobs.datasets.pack import PackOptions, arrays_source, folder_source
    from jobs.datasets.pack import pack as pack_data
    from jobs.spec import DataSpec, ValidationSplit

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if (folder is None) == (spec_path is None):
        raise BadInputError("expected an IMAGE_FOLDER argument or --spec SPEC (one of them)")
    options = PackOptions(encoding=encoding, resize=_parse_size(resize), shard_size=shard_size, quality=quality, workers=workers)
    options.check()
    if spec_path is not None:
        data = load_job_spec(spec_path).data
        if data.dataset == "tfrecord":
            raise BadInputError(f"--spec {spec_path}: data.dataset is already 'tfrecord'; expected a source to pack")
        if options.resize is None and data.resize is not None:
            options.resize = tuple(data.resize)
    else:
        if not 0 < test_fraction < 1 or not 0 < validation_fraction < 1:
            raise BadInputError(f"--test-fraction and --validation-fraction: expected values in (0, 1), received "
                                f"{test_fraction:g} and {validation_fraction:g}")
        data = DataSpec(dataset="image_folder", path=str(folder), split_seed=split_seed, test_fraction=test_fraction,
                        validation=ValidationSplit(fraction=validation_fraction))
    if data.dataset == "image_folder":
        source = folder_source(data)
    else:
        from jobs.datasets import load_dataset

        source = arrays_source(data, load_dataset(data))
    with Progress(TextColumn("packing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("pack", total=None)
        result = pack_data(source, out, options, progress=lambda done, total: bar.update(task, completed=done, total=total))
    m = result.manifest
    if result.already_packed:
        console.print(f"{out}: already holds this pack (same source and options); nothing to do", highlight=False)
    counts = ", ".join(f"{s} {m['splits'][s]['count']} ({len(m['splits'][s]['shards'])} shards)" for s in m["splits"])
    console.print(f"packed {m['source']} into {out}: {counts}; {len(m['class_names'])} classes; "
                  f"{m['image']['encoding']} {m['image']['shape'] or 'sizes vary'}"
                  + (f"; kept {result.kept} complete shards of an interrupted pack" if result.kept else ""), highlight=False)
    if m["skipped_count"]:
        console.print(f"skipped {m['skipped_count']} unreadable files: " + "; ".join(m["skipped"][:5]), highlight=False, markup=False)
    console.print(f"train on it with: data: {{dataset: tfrecord, path: {out}}}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
