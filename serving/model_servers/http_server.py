"""The HTTP transport of the REST API and of Prometheus metrics (TF Serving's model_servers/http_server.cc), on
the standard library's ThreadingHTTPServer: one thread per connection, HTTP/1.1 keep-alive, no dependency. A
REST request costs a JSON parse and the same model call as gRPC; the HTTP layer is not what limits it here
(bench/bench_serving_rest.py measures REST against gRPC).

Bodies above the configured limit are refused with 413 before they are read into memory.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional

from serving.model_servers.rest_api import RestApi, error_body

log = logging.getLogger("jobctl.serving")

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath
_DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body is read and dropped up to this, so the client sees the 413


class _TooLarge(Exception):
    pass


class _BadBody(Exception):
    pass


def _make_handler(api: Optional[RestApi], metrics_text: Callable[[], str], metrics_paths: tuple, max_body: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client's requests share one connection
        # headers and body leave in two writes: with Nagle's algorithm the body then waits for the client's
        # delayed ACK, 40 ms per request (measured: batch-1 p50 48 ms instead of about 2)
        disable_nagle_algorithm = True
        server_version = "jobctl-serve"

        def log_message(self, fmt, *args):  # access logs would flood a development console
            log.debug("http %s " + fmt, self.address_string(), *args)

        def _send(self, status: int, body: bytes, content_type: str = "application/json", close: bool = False):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._chunked()
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise _BadBody(f"Content-Length must be a number of bytes, received {self.headers.get('Content-Length')!r}") from None
            if length < 0:
                raise _BadBody(f"Content-Length must not be negative, received {length}")
            if length > max_body:
                self._drain(length)
                raise _TooLarge(length)
            return self.rfile.read(length) if length else b""

        def _chunked(self) -> bytes:
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024).split(b";")[0].strip()
                try:
                    size = int(line, 16)
                except ValueError:
                    raise _BadBody("malformed chunked transfer encoding") from None
                if size == 0:
                    self.rfile.readline(1024)
                    return b"".join(parts)
                total += size
                if total > max_body:
                    self.close_connection = True
                    raise _TooLarge(total)
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)

        def _drain(self, length: int):
            if length > _DRAIN_LIMIT:
                self.close_connection = True
                return
            while length > 0:
                chunk = self.rfile.read(min(length, 1 << 20))
                if not chunk:
                    break
                length -= len(chunk)

        def _serve(self):
            path = self.path.split("?", 1)[0]
            if path in metrics_paths and self.command in ("GET", "HEAD"):
                self._send(200, metrics_text().encode(), "text/plain; version=0.0.4")
                return
            try:
                body = self._body() if self.command in ("POST", "PUT", "PATCH") else b""
            except _TooLarge as exc:
                self._send(413, error_body(
                    f"request body of {exc.args[0]} bytes is above this server's limit of {max_body} bytes "
                    "(--rest-api-max-body-mb); send fewer instances per request or raise the limit"), close=True)
                return
            except _BadBody as exc:
                self._send(400, error_body(str(exc)), close=True)
                return
            if api is None or not api.routed(path):
                where = f"the REST API is under /v1/models/ and metrics at {metrics_paths[0]}" if api else f"metrics are at {metrics_paths[0]}"
                self._send(404, error_body(f"Not found: {self.command} {path}; {where}"))
                return
            status, payload = api.handle(self.command, path, body, self.headers.get("Origin"))
            self._send(status, payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):  # a client hanging up mid-answer is not a server error
        log.debug("http connection from %s ended with an error", client_address, exc_info=True)


class HttpServer:
    """REST (when `api` is given) and Prometheus metrics on one port. `port` 0 binds a free port."""

    def __init__(self, host: str, port: int, api: Optional[RestApi], metrics_text: Callable[[], str],
                 max_body_bytes: int, metrics_paths: tuple = (PROMETHEUS_PATH,)):
        handler = _make_handler(api, metrics_text, metrics_paths, max_body_bytes)
        self._httpd = _Server((host, port), handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"http-{self.port}", daemon=True)

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
