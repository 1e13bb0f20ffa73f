"""The server's Prometheus metrics, private to each server (tests and benchmarks run several in one process).

TF Serving's own series come first, under its names, labels, units and buckets (servables/tensorflow/util.cc,
util/prometheus_exporter.cc), so dashboards and alerts built on `jobctl serve` carry over to production:

- `:tensorflow:serving:request_count{model_name,status}` (counter): Predict, Classify and Regress over gRPC, and
  every REST request; status is the canonical code name (OK, INVALID_ARGUMENT, ...);
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}` (histogram, microseconds): successful requests
  only, entrypoint GRPC or REST;
- `:tensorflow:serving:request_example_counts{model}` (histogram) and `:tensorflow:serving:request_example_count_total{model}`
  (counter): tf.Examples per Classify/Regress request.

They are written by hand because prometheus_client renames counters (`_total`) and cannot emit TF Serving's
`:`-prefixed names unchanged. jobctl's own figures (batch sizes, version states, load failures) keep the
`jobctl_serving_` prefix and come from prometheus_client.
"""

from __future__ import annotations

import threading

# TF's monitoring::Buckets::Exponential(10, 1.8, 33): microseconds, 10 us to about 20 minutes, then +Inf
_LATENCY_BUCKETS = tuple(10.0 * 1.8**i for i in range(33))
# Exponential(1, 2, 15): 1, 2, 4, ... 16384 examples, then +Inf
_EXAMPLE_BUCKETS = tuple(float(2**i) for i in range(15))

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
EXAMPLE_COUNTS = ":tensorflow:serving:request_example_counts"
EXAMPLE_COUNT_TOTAL = ":tensorflow:serving:request_example_count_total"


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self, n: int):
        self.counts = [0] * (n + 1)
        self.total = 0.0


def _bisect(bounds: tuple, value: float) -> int:
    lo, hi = 0, len(bounds)
    while lo < hi:  # TF's buckets hold values below their limit
        mid = (lo + hi) // 2
        if value < bounds[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _num(value: float) -> str:
    """absl::StrCat(double): six significant digits, as TF Serving prints bucket limits and sums."""
    return f"{value:.6g}"


def _labels(names: tuple, values: tuple) -> str:
    return ",".join(f'{n}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for n, v in zip(names, values))


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._lock = threading.Lock()
        self._counts: dict[tuple, int] = {}  # (model_name, status)
        self._latency: dict[tuple, _Histogram] = {}  # (model_name, API, entrypoint)
        self._examples: dict[str, _Histogram] = {}
        self._example_total: dict[str, int] = {}

        self.registry = CollectorRegistry()
        self.batch_size = Histogram(
            "jobctl_serving_batch_size", "examples per model call (server-side batching)", ["model", "version"],
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.version_state = Gauge(
            "jobctl_serving_model_version_state", "ModelVersionStatus.State (30 = AVAILABLE)", ["model", "version"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "jobctl_serving_version_load_failures", "versions that failed to load or warm up", ["model"],
            registry=self.registry,
        )
        self._batch_children: dict = {}

    def observe(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One request, as TF Serving records it: counted by status, timed only when it succeeded."""
        with self._lock:
            key = (model, status)
            self._counts[key] = self._counts.get(key, 0) + 1
            if status == "OK":
                h = self._latency.get((model, api, entrypoint))
                if h is None:
                    h = self._latency[(model, api, entrypoint)] = _Histogram(len(_LATENCY_BUCKETS))
                micros = seconds * 1e6
                h.counts[_bisect(_LATENCY_BUCKETS, micros)] += 1
                h.total += micros

    def observe_examples(self, model: str, n: int) -> None:
        """tf.Examples in one Classify/Regress request (TF Serving's RecordRequestExampleCount)."""
        with self._lock:
            h = self._examples.get(model)
            if h is None:
                h = self._examples[model] = _Histogram(len(_EXAMPLE_BUCKETS))
            h.counts[_bisect(_EXAMPLE_BUCKETS, float(n))] += 1
            h.total += n
            self._example_total[model] = self._example_total.get(model, 0) + n

    def observe_batch(self, model: str, version: str, n: int) -> None:
        """One model call of `n` examples (label children cached: labels() costs a lock and a tuple per call)."""
        key = (model, version)
        child = self._batch_children.get(key)
        if child is None:
            child = self._batch_children.setdefault(key, self.batch_size.labels(*key))
        child.observe(n)

    def request_count(self, model: str, status: str) -> int:
        with self._lock:
            return self._counts.get((model, status), 0)

    def tf_serving_text(self) -> str:
        lines: list[str] = []
        with self._lock:
            if self._counts:
                lines.append(f"# TYPE {REQUEST_COUNT} counter")
                lines += [f"{REQUEST_COUNT}{{{_labels(('model_name', 'status'), k)}}} {v}" for k, v in sorted(self._counts.items())]
            if self._example_total:
                lines.append(f"# TYPE {EXAMPLE_COUNT_TOTAL} counter")
                lines += [f"{EXAMPLE_COUNT_TOTAL}{{{_labels(('model',), (k,))}}} {v}" for k, v in sorted(self._example_total.items())]
            self._histogram(lines, REQUEST_LATENCY, ("model_name", "API", "entrypoint"), _LATENCY_BUCKETS, self._latency)
            self._histogram(lines, EXAMPLE_COUNTS, ("model",), _EXAMPLE_BUCKETS, {(k,): v for k, v in self._examples.items()})
        return "\n".join(lines) + "\n" if lines else ""

    @staticmethod
    def _histogram(lines: list, name: str, label_names: tuple, bounds: tuple, series: dict) -> None:
        if not series:
            return
        lines.append(f"# TYPE {name} histogram")
        for key, h in sorted(series.items()):
            labels = _labels(label_names, key)
            running = 0
            for i, c in enumerate(h.counts):
                running += c
                le = _num(bounds[i]) if i < len(bounds) else "+Inf"
                lines.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
            lines.append(f"{name}_sum{{{labels}}} {_num(h.total)}")
            lines.append(f"{name}_count{{{labels}}} {running}")

    def text(self) -> str:
        """The whole page: TF Serving's series, then jobctl's."""
        from prometheus_client import generate_latest

        return self.tf_serving_text() + generate_latest(self.registry).decode()
