"""The sweep benchmark's smoke mode runs end to end and reports what the note quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_sweep_quick(tmp_path):
    out = tmp_path / "sweep.json"
    subprocess.run([sys.executable, "-m", "bench.bench_sweep", "--quick", "--out", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, timeout=300)
    result = json.loads(out.read_text())
    for mode, parallelism in (("parallel", 2), ("sequential", 1)):
        r = result[mode]
        assert r["parallelism"] == parallelism and r["trials"] == r["succeeded"] == 2
        assert r["wall_seconds"] > 0 and 0 < r["trial_cpu_utilisation"] <= 1.05
    assert result["speedup"] == pytest.approx(result["sequential"]["wall_seconds"] / result["parallel"]["wall_seconds"], rel=0.01)
