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
                   stdout=subprocess.DEVNULL, timeout=900)
    result = json.loads(out.read_text())
    for mode, parallelism in (("parallel", 2), ("sequential", 1)):
        r = result[mode]
        assert r["parallelism"] == parallelism and r["trials"] == r["succeeded"] == 2
        assert r["wall_seconds"] > 0 and 0 < r["trial_cpu_utilisation"] <= 1.05
    assert result["speedup"] == pytest.approx(result["sequential"]["wall_seconds"] / result["parallel"]["wall_seconds"], rel=0.01)
    budget = result["budget"]
    grid = budget["grid"]
    assert grid["epochs"] == grid["trials"] * budget["epochs_per_trial"]
    assert budget["target_val_accuracy"] == pytest.approx(grid["best_val_accuracy"] - 1 / grid["num_val"], abs=1e-6)
    assert set(budget["tpe_asha"]) == {"box", "grid"}
    runs = [run for space in budget["tpe_asha"].values() for run in space["runs"]]
    assert len(runs) == 2 * result["repetitions"] and all(run["trials"] <= budget["max_trials"] for run in runs)
    for run in runs:
        if run["epochs_to_reach_grid_best"] is not None:
            assert run["fraction_of_grid_epochs"] == pytest.approx(run["epochs_to_reach_grid_best"] / grid["epochs"], abs=1e-3)
            assert run["epochs_to_reach_grid_best"] <= run["epochs_total"]
    warm = result["warm_start"]
    assert len(warm["runs"]["warm"]) == len(warm["runs"]["cold"]) == result["repetitions"]
    cold, hot = warm["runs"]["cold"][0], warm["runs"]["warm"][0]
    assert warm["cold_over_warm_wall"] == pytest.approx(cold["wall_seconds"] / hot["wall_seconds"], rel=0.01)
