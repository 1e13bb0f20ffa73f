"""The serving benchmark's smoke mode runs end to end (all four measurements; servers in-process to stay within
the test budget: `jobctl serve` as a process is covered by test_serving_client.py).

Targets are not asserted here: they are figures of a whole machine (the note reports them); zero errors is."""

from __future__ import annotations

import pytest

from tests.support.serving import shared_models

pytestmark = pytest.mark.slow


def test_bench_serving_quick(tmp_path):
    from bench.bench_serving import run

    shared = shared_models()
    result = run(quick=True, out=tmp_path / "serving.json", prebuilt=(shared["members"], shared["ensemble"], (8, 8, 1)), in_process=True)
    assert (tmp_path / "serving.json").is_file()
    r1, r2, r3, r4 = (result[k] for k in ("latency_batch1", "batching_throughput", "ensemble_fused_vs_separate", "soak"))
    assert result["repetitions"] == 1
    assert 0 < r1["in_process_p50_ms"]["median"] and 0 < r1["grpc_p50_ms"]["median"]
    # Three figures each rounded to 1 µs: they can disagree by one unit plus float error (1.518 vs 1.517 seen).
    assert r1["value"] == pytest.approx(r1["grpc_p50_ms"]["median"] - r1["in_process_p50_ms"]["median"], abs=1.5e-3)
    # The empty handler (bench/grpc_floor.py) answered the same requests, and the overhead is split around it.
    floor = r1["empty_handler_p50_ms"]["median"]
    assert 0 < floor
    assert r1["overhead_beyond_empty_handler_ms"]["median"] == pytest.approx(
        r1["grpc_p50_ms"]["median"] - floor - r1["in_process_p50_ms"]["median"], abs=2e-3)
    assert all(r["errors"] == 0 and r["requests"] == 300 for r in r2["batching_off"] + r2["batching_on"])
    b = r2["bound"]
    o, m1, mb = b["empty_handler_cpu_ms_per_request"], b["model_cpu_ms_per_image_batch_1"], b["model_cpu_ms_per_image_batch_32"]
    assert o > 0 and b["empty_handler_rps"]["median"] > 0
    assert b["ratio_with_servers_as_cheap_as_the_empty_handler"] == pytest.approx((m1 + o) / (mb + o), abs=0.02)
    c = r2["client_cpu_ms_per_request_on"]["median"]
    assert b["ratio_with_servers_that_cost_nothing"] == pytest.approx((m1 + c) / (mb + c), abs=0.02)
    assert r2["ratio"] == pytest.approx(r2["rps_on"]["median"] / r2["rps_off"]["median"], rel=0.02)
    assert r2["mean_batch_size"] >= 1  # the batched server did batch (examples per model call)
    assert r3["ratio"] == pytest.approx(r3["three_requests_p50_ms"]["median"] / r3["fused_p50_ms"]["median"], rel=0.02)
    assert r4["errors"] == 0 and r4["requests"] == 500 and r4["server_rss_mb_after"] > 100
    # 5. REST vs gRPC on the same server: both answered every request, the ratios are those of the medians
    r5 = result["rest_vs_grpc"]
    assert all(r["errors"] == 0 and r["requests"] == 300 for r in r5["rest_runs"] + r5["grpc_runs"])
    assert r5["latency_ratio"] == pytest.approx(r5["rest_p50_ms"]["median"] / r5["grpc_p50_ms"]["median"], rel=0.02)
    assert r5["throughput_ratio"] == pytest.approx(r5["rest_rps"]["median"] / r5["grpc_rps"]["median"], rel=0.02)
