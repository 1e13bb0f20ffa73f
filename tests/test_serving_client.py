"""The client (`serving.client`, `jobctl predict`) and the server process (`jobctl serve`): retries on
UNAVAILABLE, deadlines, class names without jobctl extensions, big messages, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from bench.common import free_port
from tests.support.serving import copy_version, self_signed_cert, shared_models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stock_like(tmp_path_factory):
    """An in-process server without jobctl's metadata extension: what a client sees from stock TF Serving."""
    from serving.model_servers.config import ServerConfig
    from serving.model_servers.server import ModelServer

    shared = shared_models()
    base = tmp_path_factory.mktemp("client") / "digits"
    copy_version(shared["ensemble"], base, 1)
    server = ModelServer(ServerConfig("digits", base, port=0, host="127.0.0.1", poll_seconds=3600,
                                      max_request_batch_size=200_000, jobctl_metadata=False)).start()
    yield {"server": server, "target": f"127.0.0.1:{server.port}", "shared": shared, "base": base}
    server.stop(grace=1)


def test_class_names_through_the_ensemble_signature_and_big_messages(stock_like):
    from serving.client import PredictClient

    x = stock_like["shared"]["data"][2]
    with PredictClient(stock_like["target"], "digits", batch_size=200_000, timeout=60) as client:
        assert client.jobctl_metadata() == {}  # the stock server rejects the field; the client falls back
        assert client.class_names() == [str(i) for i in range(10)]  # from the `class_names` signature
        # 80k images: a 5 MB request and a 13 MB response, above gRPC's 4 MB default on both sides
        many = np.tile(x, (-(-80_000 // len(x)), 1, 1, 1))[:80_000]
        out = client.predict(many)
        assert out["probabilities"].shape == (80_000, 10) and out["member_probabilities"].shape == (80_000, 3, 10)
        np.testing.assert_array_equal(out["class_ids"][: len(x)], out["class_ids"][len(x) : 2 * len(x)])


def test_client_batches_many_images(stock_like):
    from serving.client import PredictClient

    x = stock_like["shared"]["data"][2]
    with PredictClient(stock_like["target"], "digits", batch_size=50) as client:
        whole = client.predict(x)
        calls = stock_like["server"].metrics.request_count("digits", "OK")
        client.predict(x)
        assert stock_like["server"].metrics.request_count("digits", "OK") - calls == -(-len(x) // 50)
    with PredictClient(stock_like["target"], "digits", batch_size=len(x)) as one_shot:
        assert np.abs(one_shot.predict(x)["probabilities"] - whole["probabilities"]).max() < 1e-6


def test_wait_for_ready_waits_for_a_server_that_is_not_up_yet(tmp_path):
    """A refused connection fails at once (UNAVAILABLE); with wait_for_ready the call waits for the server within
    its deadline. (Retrying UNAVAILABLE answers is gRPC's retry policy: tests/test_client_retry.py.)"""
    from serving.client import PredictClient, PredictError
    from serving.model_servers.config import ServerConfig
    from serving.model_servers.server import ModelServer

    shared = shared_models()
    port = free_port()
    with PredictClient(f"127.0.0.1:{port}", "ensemble", retries=0, timeout=2) as client:
        with pytest.raises(PredictError) as info:
            client.predict(shared["data"][2][:1])
        assert info.value.code == grpc.StatusCode.UNAVAILABLE

    base = tmp_path / "ensemble"
    copy_version(shared["ensemble"], base, 1)
    started = {}

    def start_later():
        time.sleep(0.6)
        started["server"] = ModelServer(ServerConfig("ensemble", base, port=port, host="127.0.0.1", poll_seconds=3600)).start()

    t = threading.Thread(target=start_later)
    t.start()
    try:
        with PredictClient(f"127.0.0.1:{port}", "ensemble", wait_for_ready=True, timeout=30) as client:
            out = client.predict(shared["data"][2][:3])
        assert out["probabilities"].shape == (3, 10)
    finally:
        t.join()
        if "server" in started:
            started["server"].stop(grace=0)


def test_cli_predict_images_and_npz(stock_like, tmp_path):
    from PIL import Image

    from cli.main import app
    from serving.model_servers.config import ServerConfig
    from serving.model_servers.server import ModelServer

    shared = stock_like["shared"]
    x, y = shared["data"][2][:20], shared["data"][3][:20]
    # jobctl's server this time: it tells the client pixel_max (digits: 0..16), PNG files are 0..255
    server = ModelServer(ServerConfig("digits", stock_like["base"], port=0, host="127.0.0.1", poll_seconds=3600)).start()
    target = f"127.0.0.1:{server.port}"
    try:
        files = []
        for i, img in enumerate(x[:4]):
            p = tmp_path / f"digit{i}.png"
            Image.fromarray(np.minimum(img[..., 0].astype(np.int32) * 16, 255).astype(np.uint8)).save(p)
            files.append(str(p))
        runner = CliRunner()
        r = runner.invoke(app, ["predict", *files, "--target", target, "--model", "digits", "--top-k", "2", "--json"])
        assert r.exit_code == 0, r.output
        preds = json.loads(r.output)["predictions"]
        from serving.client import PredictClient

        with PredictClient(target, "digits") as client:
            want = client.top_k(x[:4], k=2)
        assert [[(t["class_id"], t["class_name"]) for t in p["top_k"]] for p in preds] == [[(c, n) for c, n, _ in w] for w in want]

        npz = tmp_path / "test.npz"
        np.savez(npz, x_test=x, y_test=y)
        r = runner.invoke(app, ["predict", "--npz", str(npz), "--target", target, "--model", "digits", "--json", "--batch-size", "7"])
        assert r.exit_code == 0, r.output
        acc = json.loads(r.output)["accuracy"]
        assert acc == pytest.approx(float((np.array([w[0][0] for w in client_top(target, x)]) == y).mean()))

        r = runner.invoke(app, ["predict", "--npz", str(npz), "--target", target, "--model", "nope"])
        assert r.exit_code == 2 and "NOT_FOUND" in r.output and "Latest(nope)" in r.output
        r = runner.invoke(app, ["predict", "--target", target, "--model", "digits"])
        assert r.exit_code == 2 and "give IMAGE files or --npz FILE" in r.output
    finally:
        server.stop(grace=0)


def client_top(target, x):
    from serving.client import PredictClient

    with PredictClient(target, "digits") as client:
        return client.top_k(x, k=1)


def test_serve_process_deadline_and_graceful_sigterm(tmp_path):
    """`jobctl serve` as users run it: a slow batch makes a request in flight when SIGTERM arrives; it
    completes, the process exits 0, and a short client deadline gives DEADLINE_EXCEEDED (never retried)."""
    from serving.client import PredictClient, PredictError

    shared = shared_models()
    base = tmp_path / "ensemble"
    copy_version(shared["ensemble"], base, 1)
    port, metrics_port = free_port(), free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", str(base), "--port", str(port), "--host", "127.0.0.1",
         "--enable-batching", "--batch-timeout-micros", "1500000", "--max-batch-size", "64",
         "--metrics-port", str(metrics_port), "--grace-seconds", "10", "--rest-api-port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        target = f"127.0.0.1:{port}"
        with PredictClient(target, "ensemble", retries=0, timeout=60) as client:
            client.wait_until_available(timeout=90)
            x = shared["data"][2][:2]
            with pytest.raises(PredictError) as info:
                client.predict(x, timeout=0.3)  # waits 1.5 s in the batch queue
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

            import urllib.request

            counted = ':tensorflow:serving:request_count{model_name="ensemble",status="DEADLINE_EXCEEDED"} 1'
            for _ in range(50):  # the server counts the request once gRPC cancels it, just after the client gave up
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
                if counted in text:
                    break
                time.sleep(0.1)
            assert 'jobctl_serving_model_version_state{model="ensemble",version="1"} 30.0' in text
            assert counted in text

            result = {}
            t = threading.Thread(target=lambda: result.update(out=client.predict(x)))
            t.start()
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            t.join(timeout=30)
            assert result["out"]["probabilities"].shape == (2, 10)  # the in-flight request finished
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log = proc.stdout.read()
    assert "draining" in log and "stopped" in log


def test_tls_channel(tmp_path):
    from serving.client import PredictClient, PredictError
    from serving.model_servers.config import ServerConfig
    from serving.model_servers.server import ModelServer

    cert, key = self_signed_cert(tmp_path)
    shared = shared_models()
    base = tmp_path / "ensemble"
    copy_version(shared["ensemble"], base, 1)
    server = ModelServer(ServerConfig("ensemble", base, port=0, host="127.0.0.1", poll_seconds=3600,
                                      tls_cert=cert, tls_key=key)).start()
    try:
        with PredictClient(f"localhost:{server.port}", "ensemble", tls=True, root_certificates=cert) as client:
            assert client.predict(shared["data"][2][:2])["probabilities"].shape == (2, 10)
        with PredictClient(f"localhost:{server.port}", "ensemble", retries=0, timeout=3) as plain:
            with pytest.raises(PredictError) as info:  # a plaintext client cannot talk to a TLS port
                plain.predict(shared["data"][2][:1])
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=0)
