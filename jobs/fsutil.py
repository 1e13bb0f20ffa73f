"""Atomic writes: a reader (a person, a sweep, TF Serving polling a directory) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Union

READABLE_FILE_MODE = 0o644


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes 0600; the renamed file must be as readable as any other (jobctl.json in an export is read
        # by the serving user, which need not be the trainer's).
        os.fchmod(fd, READABLE_FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Union[str, Path], data: Any, *, sort_keys: bool = True) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=_default) + "\n")


def _default(obj):
    # numpy scalars and paths appear in metrics; keep JSON plain.
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
