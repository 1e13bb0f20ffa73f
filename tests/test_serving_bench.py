"""The serving benchmark's smoke mode runs end to end (all four measurements; servers in-process to stay within
the test budget: `jobctl serve` as a process is covered by test_serving_client.py).

Targets are not asserted here: they are figures of a whole machine (the note reports them); zero errors is."""

from __future__ import annotations

import pytest

from tests.serving_fixtures import shared_models

pytestmark = pytest.mark.slow


def test_bench_serving_quick(tmp_path):
    from bench.bench_serving import run

    shared = shared_models()
    result = run(quick=True, out=tmp_path / "serving.json", prebuilt=(shared["members"], shared["ensemble"], (8, 8, 1)), in_process=True)
    assert (tmp_path / "serving.json").is_file()
    r1, r2, r3, r4 = (result[k] for k in ("latency_batch1", "batching_throughput", "ensemble_fused_vs_separate", "soak"))
    assert 0 < r1["in_process_p50_ms"] and 0 < r1["grpc_p50_ms"]
    assert r2["batching_off"]["errors"] == 0 and r2["batching_on"]["errors"] == 0 and r2["ratio"] > 0
    assert r3["fused_p50_ms"] > 0 and r3["three_requests_p50_ms"] > 0
    assert r4["errors"] == 0 and r4["requests"] == 500 and r4["server_rss_mb_after"] > 100
