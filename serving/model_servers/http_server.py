"""The HTTP transport of the REST API and of Prometheus metrics (TF Serving's model_servers/http_server.cc): HTTP/1.1
with keep-alive on one asyncio event loop of its own, the requests handled by a small thread pool.

Why not the standard library's ThreadingHTTPServer (tried first): it runs a thread per connection, and with 32
clients 32 threads pass the interpreter lock around at every socket read and write. One event loop for the
sockets plus a pool of a few threads for the work served 40% more requests per second at 32 clients with the
same answers (bench/serving_rest.py; in-process runs on 2 cores, 4 vs 32 worker threads). Still the standard
library only.

Bodies above the configured limit are refused with 413 before they are read into memory; `Expect:
100-continue` (curl sends it for bodies above 1 MB) is answered, so such a client is refused before it sends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from http import HTTPStatus
from typing import Callable, Optional

from serving.model_servers.rest_api import RestApi, error_body

log = logging.getLogger("jobctl.serving")

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's PrometheusExporter::kPrometheusPath
_HEADER_LIMIT = 64 * 1024
_DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body is read and dropped up to this, so the client sees the 413
_BODY_METHODS = ("POST", "PUT", "PATCH")


class _Refused(Exception):
    """An answer decided while reading the request: (status, message); the connection closes after it."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Error"


class HttpServer:
    """REST (when `api` is given) and Prometheus metrics on one port; `port` 0 binds a free port."""

    def __init__(self, host: str, port: int, api: Optional[RestApi], metrics_text: Callable[[], str],
                 max_body_bytes: int, metrics_paths: tuple = (PROMETHEUS_PATH,), workers: int = 4):
        self._api, self._metrics_text, self._metrics_paths = api, metrics_text, metrics_paths
        self._max_body = max_body_bytes
        self._writers: set = set()
        self._busy = 0  # requests between their last byte read and their answer written
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http", daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._connection, host, port, limit=_HEADER_LIMIT, backlog=128)
        try:
            self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result()
        except OSError:
            self._shutdown_loop()
            raise
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> "HttpServer":
        return self

    def stop(self, grace: float = 10.0):
        """New connections are refused at once; requests in flight get `grace` seconds to be answered."""

        async def close():
            self._server.close()
            deadline = self._loop.time() + grace
            while self._busy and self._loop.time() < deadline:
                await asyncio.sleep(0.05)
            for w in list(self._writers):  # idle keep-alive connections would hold wait_closed() forever
                w.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=grace + 10)
        self._shutdown_loop()
        self._pool.shutdown(wait=False)

    def _shutdown_loop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- one connection: requests in sequence (HTTP/1.1 keep-alive)
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writers.add(writer)
        try:
            keep = True
            while keep:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection between requests
                except asyncio.LimitOverrunError:
                    await self._reply(writer, 431, error_body(f"request headers above {_HEADER_LIMIT} bytes"), close=True)
                    return
                try:
                    method, path, keep, body, origin = await self._request(head, reader, writer)
                except _Refused as exc:
                    status, message = exc.args
                    await self._reply(writer, status, error_body(message), close=True)
                    return
                self._busy += 1
                try:
                    status, payload, ctype = await self._answer(method, path, body, origin)
                    await self._reply(writer, status, payload, ctype, close=not keep, head_only=method == "HEAD")
                finally:
                    self._busy -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: nobody to answer
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _request(self, head: bytes, reader, writer):
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, f"malformed HTTP request line: {lines[0][:200]!r}")
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _Refused(400, f"malformed HTTP header line: {line[:200]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked(reader)
        elif method in _BODY_METHODS or "content-length" in headers:
            body = await self._sized(reader, writer, headers)
        return method, target.split("?", 1)[0], keep, body, headers.get("origin")

    def _too_large(self, size: int) -> _Refused:
        return _Refused(413, f"request body of {size} bytes is above this server's limit of {self._max_body} bytes "
                             "(--rest-api-max-body-mb); send fewer instances per request or raise the limit")

    async def _sized(self, reader, writer, headers: dict) -> bytes:
        raw = headers.get("content-length", "0")
        try:
            length = int(raw)
        except ValueError:
            raise _Refused(400, f"Content-Length must be a number of bytes, received {raw!r}") from None
        if length < 0:
            raise _Refused(400, f"Content-Length must not be negative, received {length}")
        expect = headers.get("expect", "").lower() == "100-continue"
        if length > self._max_body:
            if not expect and length <= _DRAIN_LIMIT:  # the client is already sending: take it, then answer
                while length > 0:
                    length -= len(await reader.readexactly(min(length, 1 << 20)))
            raise self._too_large(int(raw))
        if expect:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await reader.readexactly(length) if length else b""

    async def _chunked(self, reader) -> bytes:
        parts, total = [], 0
        while True:
            line = (await reader.readuntil(b"\r\n")).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise _Refused(400, "malformed chunked transfer encoding") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > self._max_body:
                raise self._too_large(total)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _answer(self, method: str, path: str, body: bytes, origin: Optional[str]) -> tuple[int, bytes, str]:
        if path in self._metrics_paths and method in ("GET", "HEAD"):
            text = await self._loop.run_in_executor(self._pool, self._metrics_text)
            return 200, text.encode(), "text/plain; version=0.0.4"
        if self._api is None or not self._api.routed(path):
            where = (f"the REST API is under /v1/models/ and metrics at {self._metrics_paths[0]}" if self._api
                     else f"metrics are at {self._metrics_paths[0]}")
            return 404, error_body(f"Not found: {method} {path}; {where}"), "application/json"
        status, payload = await self._loop.run_in_executor(self._pool, self._api.handle, method, path, body, origin)
        return status, payload, "application/json"

    async def _reply(self, writer, status: int, payload: bytes, ctype: str = "application/json", close: bool = False,
                     head_only: bool = False):
        head = (f"HTTP/1.1 {status} {_phrase(status)}\r\nServer: jobctl-serve\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n")
        writer.write(head.encode() + (b"" if head_only else payload))  # one write: no Nagle wait between parts
        await writer.drain()
