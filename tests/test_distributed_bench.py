"""The distribution benchmark's smoke mode: every variant runs and the JSON has the figures the report quotes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_bench_distribute_quick_writes_every_variant(tmp_path):
    out = tmp_path / "distribute.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_distribute", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"none", "mirrored_1", "mirrored_2", "workers_2"}
    for name, variant in result["variants"].items():
        assert variant["images_per_second"]["median"] > 0, name
        assert variant["ratio_to_none"]["median"] > 0, name
    assert result["variants"]["none"]["ratio_to_none"]["median"] == 1.0
    assert "not measurable" in result["note"] or "cannot be measured" in result["note"]
    assert result["command"] == "python -m bench.bench_distribute --quick"
