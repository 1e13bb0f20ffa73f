"""A generic downloader: one URL to one file, atomically, with bounded waits and retries of transient failures."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from jobs.errors import BadInputError

log = logging.getLogger(__name__)

# Set JOBCTL_OFFLINE=1 to never attempt a download (air-gapped clusters, CI).
OFFLINE_ENV = "JOBCTL_OFFLINE"
# Seconds allowed for name resolution, the connection and each read; a stalled download fails after this.
DOWNLOAD_TIMEOUT_ENV = "JOBCTL_DOWNLOAD_TIMEOUT"
DEFAULT_DOWNLOAD_TIMEOUT = 30.0
# Upper bound for a whole file, so a trickling connection cannot hold a job forever.
DOWNLOAD_DEADLINE_ENV = "JOBCTL_DOWNLOAD_DEADLINE"
DEFAULT_DOWNLOAD_DEADLINE = 1800.0
# Attempts per file for transient failures (timeouts, resets, HTTP 5xx). DataUnavailable is never retried at the
# pod level (exit code 3), so a network glitch is retried here, a few seconds apart.
DOWNLOAD_ATTEMPTS_ENV = "JOBCTL_DOWNLOAD_ATTEMPTS"
DEFAULT_DOWNLOAD_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 2.0

def download_allowed() -> tuple[bool, str]:
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False, f"downloads are disabled (${OFFLINE_ENV} is set)"
    return True, ""


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadInputError(f"${name}: expected a number of seconds, received {raw!r}") from None
    if value <= 0:
        raise BadInputError(f"${name}: expected a positive number of seconds, received {raw!r}")
    return value


def _resolve_bounded(host: str, port: int, timeout: float) -> None:
    """getaddrinfo has no timeout of its own: run it in a daemon thread and stop waiting after `timeout`."""
    outcome: dict = {}

    def work():
        try:
            outcome["ok"] = socket.getaddrinfo(host, port)
        except OSError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=work, daemon=True, name=f"resolve-{host}")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError(f"resolving {host} took longer than {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]


def download_file(url: str, dest: Path, sha256: Optional[str] = None, timeout: Optional[float] = None,
                  deadline: Optional[float] = None) -> Path:
    """Fetch `url` to `dest` atomically (temp file, then rename), with bounded waits and an optional sha256 check.

    Raises OSError/TimeoutError on network trouble and ValueError on a hash mismatch; `dest` is never half-written.
    """
    timeout = timeout if timeout is not None else _env_seconds(DOWNLOAD_TIMEOUT_ENV, DEFAULT_DOWNLOAD_TIMEOUT)
    deadline = deadline if deadline is not None else _env_seconds(DOWNLOAD_DEADLINE_ENV, DEFAULT_DOWNLOAD_DEADLINE)
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        pp = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        _resolve_bounded(pp.hostname or "", pp.port or 80, timeout)
    elif parts.hostname:
        _resolve_bounded(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), timeout)

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    started = time.monotonic()
    hasher = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            log.info("downloading %s (%s) to %s", url, f"{total / 1e6:.1f} MB" if total else "size unknown", dest)
            done, next_report = 0, 0.1
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if time.monotonic() - started > deadline:
                    raise TimeoutError(f"download of {url} exceeded {deadline:g} s (${DOWNLOAD_DEADLINE_ENV})")
                if total and done / total >= next_report:
                    log.info("  %3.0f%% of %s", 100 * done / total, dest.name)
                    next_report += 0.1
        if sha256 and hasher.hexdigest() != sha256:
            raise BadInputError(f"{url}: sha256 {hasher.hexdigest()} does not match the expected {sha256}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _transient(exc: BaseException) -> bool:
    """Worth another attempt: timeouts, refused/reset connections, server errors. Not: no DNS, 4xx, bad hash."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, socket.gaierror):
        return False  # no name resolution: offline, or a wrong host
    return isinstance(exc, (TimeoutError, ConnectionError))


def download_with_retries(url: str, dest: Path, sha256: Optional[str]) -> Path:
    raw = os.environ.get(DOWNLOAD_ATTEMPTS_ENV, "")
    attempts = int(raw) if raw.strip().isdigit() and int(raw) >= 1 else DEFAULT_DOWNLOAD_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return download_file(url, dest, sha256)
        except OSError as exc:
            if attempt == attempts or not _transient(exc):
                raise
            wait = RETRY_BACKOFF_SECONDS * attempt
            log.warning("download of %s failed (%s); attempt %d of %d in %.0f s", url, exc, attempt + 1, attempts, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


