"""The server's Prometheus metrics, on a private registry per server (tests and benchmarks run several in one
process)."""

from __future__ import annotations


class Metrics:
    """Prometheus metrics on a private registry (several servers may live in one test process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "jobctl_serving_requests", "gRPC requests by model, version, method and status code",
            ["model", "version", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "jobctl_serving_request_latency_seconds", "request latency (server side)",
            ["model", "version", "method", "status"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
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

        self._children: dict = {}
        self._batch_children: dict = {}

    def observe(self, model: str, version: str, method: str, status: str, seconds: float) -> None:
        """One request: cached label children (labels() costs a lock and a tuple build on every call)."""
        key = (model, version, method, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children.setdefault(key, (self.requests.labels(*key), self.latency.labels(*key)))
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_batch(self, model: str, version: str, n: int) -> None:
        """One model call of `n` examples; cached like observe()."""
        key = (model, version)
        child = self._batch_children.get(key)
        if child is None:
            child = self._batch_children.setdefault(key, self.batch_size.labels(*key))
        child.observe(n)

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

