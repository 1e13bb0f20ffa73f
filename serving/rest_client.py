"""A client for TF Serving's REST API (stock `tensorflow/serving` on 8501, or `jobctl serve`), with the standard
library, numpy and base64 only: no TensorFlow, no gRPC.

    with RestClient("http://localhost:8501", "digits") as client:
        probs = client.predict(images)["probabilities"]          # columnar JSON, batched, 503s retried
        for row in client.top_k(images, k=3): ...                 # [(class_id, class_name, probability), ...]

Each thread keeps one HTTP/1.1 connection (keep-alive), so a loop of small requests does not pay a TCP
handshake each time.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import threading
import time
import urllib.parse
from typing import Optional, Sequence, Union

import numpy as np

from jobs.contract import INPUT_NAME, OUTPUT_PROBABILITIES, SIGNATURE_NAME
from jobs.errors import BadInputError, OperationFailedError

log = logging.getLogger("jobctl.client")

_DTYPES = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_INT8": "int8", "DT_INT16": "int16",
           "DT_INT32": "int32", "DT_INT64": "int64", "DT_UINT8": "uint8", "DT_UINT16": "uint16", "DT_UINT32": "uint32",
           "DT_UINT64": "uint64", "DT_BOOL": "bool", "DT_STRING": "object"}
RETRYABLE_HTTP = (503,)


class RestError(OperationFailedError):
    """A failed REST call: the HTTP status and TF Serving's `error` text. 400 and 404 (the request is wrong: a
    bad tensor, an unknown model, version or label) are `BadRestRequest` (exit 2 in the CLI)."""

    def __new__(cls, status: int, message: str, url: str):
        if cls is RestError and status in (400, 404, 413):
            cls = BadRestRequest
        return super().__new__(cls, status, message, url)

    def __init__(self, status: int, message: str, url: str):
        super().__init__(f"HTTP {status}: {message} ({url})")
        self.status, self.details, self.url = status, message, url


class BadRestRequest(RestError, BadInputError):
    exit_code = BadInputError.exit_code


class InputSpec:
    def __init__(self, name: str, dtype: np.dtype, shape: list[int]):
        self.name, self.dtype, self.shape = name, dtype, shape  # shape without the batch dimension; -1 unknown


def _encode(a: np.ndarray):
    if a.dtype == object or a.dtype.kind == "S":
        return np.vectorize(lambda v: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else str(v), otypes=[object])(a).tolist()
    return a.tolist()


class RestClient:
    def __init__(self, url: str, model: str, *, version: Optional[int] = None, version_label: Optional[str] = None,
                 signature: str = SIGNATURE_NAME, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2,
                 batch_size: int = 256):
        if version is not None and version_label:
            raise BadInputError(f"choose version ({version}) or version_label ({version_label!r}), not both")
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise BadInputError(f"REST URL: expected http://HOST:PORT (TF Serving's REST port is 8501), received {url!r}")
        self.url, self.model, self.signature = url, model, signature
        self._scheme, self._host = parsed.scheme, parsed.hostname
        self._port = parsed.port or (443 if parsed.scheme == "https" else 8501)
        self.timeout, self.retries, self.backoff, self.batch_size = timeout, retries, backoff, batch_size
        quoted = urllib.parse.quote(model, safe="")
        where = f"/versions/{version}" if version is not None else f"/labels/{urllib.parse.quote(version_label, safe='')}" if version_label else ""
        self.base = f"/v1/models/{quoted}{where}"
        self._local = threading.local()
        self._metadata: Optional[dict] = None

    # -- plumbing
    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return conn

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def call(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        """One request, retried on 503 and on a connection that cannot be made or was dropped."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        url = f"{self._scheme}://{self._host}:{self._port}{path}"
        attempt = 0
        while True:
            try:
                conn = self._conn()
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                status, data = response.status, response.read()
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                status, data = None, str(exc).encode()
            if status == 200:
                return json.loads(data)
            if (status is None or status in RETRYABLE_HTTP) and attempt < self.retries:
                delay = self.backoff * (2**attempt)
                log.info("%s: %s, retry %d/%d in %.2fs", url, status or data.decode(), attempt + 1, self.retries, delay)
                time.sleep(delay)
                attempt += 1
                continue
            if status is None:
                raise RestError(503, f"cannot reach the server: {data.decode()}", url)
            try:
                message = json.loads(data).get("error", data.decode())
            except (ValueError, AttributeError):
                message = data.decode("utf-8", "replace")
            raise RestError(status, message, url)

    # -- API
    def predict(self, inputs: Union[np.ndarray, dict], *, output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """:predict in the columnar format, `batch_size` examples per request; outputs by name."""
        if not isinstance(inputs, dict):
            inputs = {INPUT_NAME: inputs}
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        n = len(next(iter(inputs.values())))
        outputs = self.output_names()
        parts = []
        for start in range(0, max(n, 1), self.batch_size):
            body = {"signature_name": self.signature,
                    "inputs": {k: _encode(v[start : start + self.batch_size]) for k, v in inputs.items()}}
            answer = self.call("POST", f"{self.base}:predict", body)["outputs"]
            if not isinstance(answer, dict) or len(outputs) == 1:
                answer = {outputs[0]: answer}
            parts.append({k: np.asarray(v) for k, v in answer.items() if not output_filter or k in output_filter})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def metadata(self) -> dict:
        """The /metadata answer as TF Serving gives it (model_spec, metadata.signature_def, and jobctl's field)."""
        if self._metadata is None:
            self._metadata = self.call("GET", f"{self.base}/metadata")
        return self._metadata

    def _signature(self) -> dict:
        defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
        if self.signature not in defs:
            raise RestError(400, f'Serving signature name: "{self.signature}" not found in signature def', self.url)
        return defs[self.signature]

    def output_names(self) -> list[str]:
        return sorted(self._signature()["outputs"])

    def input_spec(self) -> InputSpec:
        name, info = sorted(self._signature()["inputs"].items())[0]
        dims = [int(d["size"]) for d in info["tensor_shape"].get("dim", [])][1:]
        return InputSpec(name, np.dtype(_DTYPES.get(info["dtype"], "object")), dims)

    def jobctl_metadata(self) -> dict:
        """jobctl.json from `jobctl serve`; {} from stock TF Serving."""
        return self.metadata()["metadata"].get("jobctl", {})

    def class_names(self) -> Optional[list[str]]:
        """From jobctl.json via `jobctl serve`. An ensemble's input-less `class_names` signature cannot be called
        over REST (TF Serving: "Failed to get input map for signature"); gRPC's client reads it."""
        names = self.jobctl_metadata().get("class_names")
        return list(names) if names else None

    def top_k(self, images: np.ndarray, k: int = 3) -> list[list[tuple[int, str, float]]]:
        probs = self.predict(images, output_filter=[OUTPUT_PROBABILITIES])[OUTPUT_PROBABILITIES]
        names = self.class_names() or [str(i) for i in range(probs.shape[-1])]
        k = min(k, probs.shape[-1])
        order = np.argsort(-probs, axis=-1)[:, :k]
        return [[(int(c), names[c], float(row[c])) for c in idx] for row, idx in zip(probs, order)]

    def status(self) -> list[dict]:
        return self.call("GET", self.base)["model_version_status"]
