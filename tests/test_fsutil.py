"""Atomic writes: whole files only, and as readable as a plain write (exports are read by another user)."""

import json
import stat

from jobs.fsutil import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_files_readable_by_others(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044  # mkstemp alone would leave 0600
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]  # no temporary file left behind
    meta = atomic_write_json(tmp_path / "m.json", {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads(meta.read_text())) == ["b", "a"]
