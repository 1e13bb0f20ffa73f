"""`python -m jobs.data --spec FILE` (and `jobctl data describe`): load a spec's data as training will, and say what
was found. The container-side check: it fills a cache from an init container, or checks a folder before a long run,
without TensorFlow."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import numpy as np

from jobs.datasets.load import load_dataset
from jobs.spec import DataSpec


def describe(data_spec: DataSpec) -> list[str]:
    """The lines `python -m jobs.data` prints: split sizes, input shape, classes, notes."""
    if data_spec.dataset == "tfrecord":
        return _describe_packed(data_spec)
    data = load_dataset(data_spec)
    counts = np.bincount(data.y_train, minlength=data.num_classes)
    lines = [
        f"{data_spec.dataset}: train {len(data.x_train)}, validation {len(data.x_val)}, test {len(data.x_test)}; "
        f"input {list(data.input_shape)} uint8 (pixel max {data.pixel_max:g}); {data.num_classes} classes, "
        f"{int(counts.min())}..{int(counts.max())} training images per class",
        "classes: " + ", ".join(data.class_names[:20]) + (" ..." if data.num_classes > 20 else ""),
    ]
    return lines + [f"note: {note}" for note in data.notes]


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m jobs.data --spec FILE`: load (downloading if needed) and describe a spec's data, without TensorFlow.

    Exit codes as jobs.exit_codes: 0 ok, 2 bad spec or data, 3 data unavailable.
    """
    import argparse

    from jobs import exit_codes
    from jobs.errors import JobctlError
    from jobs.spec import load_spec

    parser = argparse.ArgumentParser(prog="python -m jobs.data", description=main.__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="job spec YAML")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        lines = describe(load_spec(args.spec).data)
    except JobctlError as exc:  # a SpecError renders one line per problem; the others are one line already
        print(exc.render() if hasattr(exc, "render") else f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print("\n".join(lines))
    return exit_codes.OK


def _describe_packed(data_spec: DataSpec) -> list[str]:
    """A packed directory: its dataset.json, after the same checks training makes (shards present, checksums)."""
    from jobs.datasets.packed import open_packed

    packed = open_packed(data_spec)
    splits = ", ".join(f"{name} {s.count} ({len(s.shards)} shards)" for name, s in packed.splits.items())
    return [
        f"tfrecord: {splits}; {packed.encoding} images {packed.shape or 'of varying sizes'}; "
        f"{len(packed.class_names)} classes; every shard present" + (" and its sha256 checked" if data_spec.verify_checksums else ""),
        "classes: " + ", ".join(packed.class_names[:20]) + (" ..." if len(packed.class_names) > 20 else ""),
    ]
