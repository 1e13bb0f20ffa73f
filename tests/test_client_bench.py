"""bench/bench_client.py's smoke mode: both clients import, predict against the same server and are measured; the
installed-size closures are what each client app would install (no TensorFlow in jobctl_client's)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_bench_client_quick(tmp_path):
    from bench import bench_client

    result = bench_client.main(["--quick", "--out", str(tmp_path / "client.json")])
    assert json.loads((tmp_path / "client.json").read_text())["repetitions"] == 1
    ours, theirs = result["clients"]["jobctl_client"], result["clients"]["tensorflow_serving_api"]
    assert "tensorflow" not in ours["distributions"] and "tensorflow" in theirs["distributions"]
    assert {"grpcio", "protobuf", "numpy"} <= set(ours["distributions"])
    assert ours["installed_mb"] > 0 and ours["peak_rss_mb"]["median"] > 0 and ours["import_seconds"]["median"] > 0
    rows = bench_client.headlines(result)
    assert len(rows) == 3 and all("bench_client" in r.question for r in rows)


def test_closure_follows_requirements_and_skips_extras():
    from bench.bench_client import closure

    sizes = closure("jobctl-client")
    assert {"jobctl-client", "grpcio", "grpcio-health-checking", "protobuf", "numpy"} <= set(sizes)
    assert "grpcio-tools" not in sizes and all(v > 0 for v in sizes.values())
