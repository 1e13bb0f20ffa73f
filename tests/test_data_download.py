"""Downloads of missing Keras dataset files: from a local HTTP server, into the Keras cache layout, bounded in time."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import jobs.datasets.download as download_mod
import jobs.datasets.keras_cache as keras_cache_mod
from jobs.datasets import DataUnavailable, load_dataset
from jobs.spec import DataSpec
from tests.support.keras_files import write_cifar10, write_fashion_mnist


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []
    fail_first: int = 0  # answer this many requests with 503 first

    def do_GET(self):  # noqa: N802 -- http.server's naming
        type(self).requests.append(self.path)
        if len(self.requests) <= self.fail_first:
            self.send_error(503, "busy")
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "no such file")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "JOBCTL_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download_mod, "RETRY_BACKOFF_SECONDS", 0.01)
    handler = type("Handler", (_Files,), {"files": {}, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield handler
    httpd.shutdown()
    httpd.server_close()


def _cifar_tar(tmp_path: Path) -> tuple[bytes, dict]:
    written = write_cifar10(tmp_path / "staging" / "cifar-10-batches-py", seed=9)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buf.getvalue(), written


def _cache(tmp_path: Path) -> str:
    (tmp_path / "cache").mkdir(parents=True)
    return str(tmp_path / "cache")


def _point_source(monkeypatch, name: str, **changes):
    monkeypatch.setitem(keras_cache_mod.KERAS_SOURCES, name, dataclasses.replace(keras_cache_mod.KERAS_SOURCES[name], **changes))


def test_cifar10_is_downloaded_verified_and_extracted_where_keras3_keeps_it(tmp_path, monkeypatch, server):
    blob, written = _cifar_tar(tmp_path)
    server.files["/cifar-10-python.tar.gz"] = blob
    _point_source(monkeypatch, "cifar10", origin=server.url + "/cifar-10-python.tar.gz",
                  sha256=hashlib.sha256(blob).hexdigest())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    spec = DataSpec(dataset="cifar10", validation={"use_test": True})

    data = load_dataset(spec)
    np.testing.assert_array_equal(data.x_test, written["test_batch"][0])
    datasets = tmp_path / "kh" / "datasets"
    assert (datasets / "cifar-10-batches-py-target_archive").read_bytes() == blob
    assert (datasets / "cifar-10-batches-py-target" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not [p for p in datasets.iterdir() if p.name.startswith(".")]  # no temp files left behind

    load_dataset(spec)  # the cache is used: no second request
    assert server.requests == ["/cifar-10-python.tar.gz"]


def test_a_hash_mismatch_leaves_nothing_behind(tmp_path, monkeypatch, server):
    blob, _ = _cifar_tar(tmp_path)
    server.files["/c.tgz"] = blob
    _point_source(monkeypatch, "cifar10", origin=server.url + "/c.tgz", sha256="0" * 64)
    with pytest.raises(DataUnavailable, match=r"download failed .*sha256 [0-9a-f]{64} does not match"):
        load_dataset(DataSpec(dataset="cifar10", path=_cache(tmp_path)))
    assert list((tmp_path / "cache").iterdir()) == []


def test_fashion_mnist_files_are_fetched_one_by_one(tmp_path, monkeypatch, server):
    written = write_fashion_mnist(tmp_path / "staging", n_train=6, n_test=2)
    for f in (tmp_path / "staging").iterdir():
        server.files["/fm/" + f.name] = f.read_bytes()
    _point_source(monkeypatch, "fashion_mnist", origin=server.url + "/fm/")
    data = load_dataset(DataSpec(dataset="fashion_mnist", path=_cache(tmp_path), validation={"use_test": True}))
    np.testing.assert_array_equal(data.x_test[..., 0], written["t10k"][0])
    assert (tmp_path / "cache" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert len(server.requests) == 4


def test_http_errors_become_data_unavailable_naming_the_files(tmp_path, monkeypatch, server):
    _point_source(monkeypatch, "mnist", origin=server.url + "/missing/mnist.npz")
    with pytest.raises(DataUnavailable, match=r"download failed \(HTTP Error 404.*Wanted: mnist.npz in .*cache/"):
        load_dataset(DataSpec(dataset="mnist", path=_cache(tmp_path)))
    assert len(server.requests) == 1  # a 404 is not retried


def test_transient_server_errors_are_retried_a_bounded_number_of_times(tmp_path, monkeypatch, server):
    from tests.support.keras_files import write_mnist

    arrays = write_mnist(tmp_path / "staging" / "mnist.npz")
    server.files["/mnist.npz"] = (tmp_path / "staging" / "mnist.npz").read_bytes()
    _point_source(monkeypatch, "mnist", origin=server.url + "/mnist.npz", sha256=None)
    server.fail_first = 2
    data = load_dataset(DataSpec(dataset="mnist", path=_cache(tmp_path), validation={"use_test": True}))
    np.testing.assert_array_equal(data.y_test, arrays["y_test"])
    assert len(server.requests) == 3

    server.requests.clear()
    server.fail_first = 10
    with pytest.raises(DataUnavailable, match=r"HTTP Error 503"):
        load_dataset(DataSpec(dataset="mnist", path=_cache(tmp_path / "again")))
    assert len(server.requests) == 3  # JOBCTL_DOWNLOAD_ATTEMPTS' default


def test_a_stalled_server_cannot_hang_the_job(tmp_path, monkeypatch, server):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection (kernel backlog) and never answers
    try:
        _point_source(monkeypatch, "mnist", origin=f"http://127.0.0.1:{listener.getsockname()[1]}/mnist.npz")
        monkeypatch.setenv("JOBCTL_DOWNLOAD_TIMEOUT", "0.25")
        monkeypatch.setenv("JOBCTL_DOWNLOAD_ATTEMPTS", "2")
        started = time.monotonic()
        with pytest.raises(DataUnavailable, match=r"download failed .*timed out"):
            load_dataset(DataSpec(dataset="mnist", path=_cache(tmp_path)))
        assert time.monotonic() - started < 5  # 2 attempts x 0.25 s, not forever
    finally:
        listener.close()


def test_a_hanging_name_lookup_is_bounded_too(tmp_path, monkeypatch, server):
    def slow_lookup(*a, **k):
        time.sleep(3)
        raise OSError("late")

    monkeypatch.setattr(socket, "getaddrinfo", slow_lookup)
    monkeypatch.setenv("JOBCTL_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("JOBCTL_DOWNLOAD_ATTEMPTS", "1")
    started = time.monotonic()
    with pytest.raises(DataUnavailable, match=r"resolving storage.googleapis.com took longer than 0.3 s"):
        load_dataset(DataSpec(dataset="mnist", path=_cache(tmp_path)))
    assert time.monotonic() - started < 2


def test_a_half_extracted_cache_is_replaced_by_a_complete_extraction(tmp_path, monkeypatch, server):
    blob, written = _cifar_tar(tmp_path)
    server.files["/c.tgz"] = blob
    _point_source(monkeypatch, "cifar10", origin=server.url + "/c.tgz", sha256=hashlib.sha256(blob).hexdigest())
    cache = _cache(tmp_path)
    stale = Path(cache) / "cifar-10-batches-py-target" / "cifar-10-batches-py"
    stale.mkdir(parents=True)
    (stale / "data_batch_1").write_bytes(b"half")
    data = load_dataset(DataSpec(dataset="cifar10", path=cache, validation={"use_test": True}))
    np.testing.assert_array_equal(data.x_train[:4], written["data_batch_1"][0])
    assert (stale / "test_batch").is_file()
