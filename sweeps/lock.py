"""One `jobctl sweep` process per sweep directory: two would start the same trials twice and interleave their
records. An advisory lock (flock) on `<sweep_dir>/sweep.lock`: the kernel drops it when the process dies, so a
crash never leaves a stale lock behind. The file holds the owner's pid and host, for the refusal message."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

from sweeps.errors import SweepBusyError

LOCK_FILE = "sweep.lock"


class SweepLock:
    def __init__(self, sweep_dir: Path):
        self.path = Path(sweep_dir) / LOCK_FILE
        self._fh = None

    def __enter__(self) -> "SweepLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise SweepBusyError(
                f"{self.path.parent}: another jobctl sweep is running on this sweep directory ({owner}); expected "
                "one sweep process per directory: wait for it to finish, or stop it (its trials resume with it)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
