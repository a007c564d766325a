"""Prometheus metrics of the scoring service (``GET /metrics``): latency, batch sizes, responses, limits."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .limits import LIMIT_NAMES


class ServeMetrics:
    """The service's counters, histograms and gauges, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "c2al_score_latency_seconds",
            "Time from receiving a /v1/score request to its response",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "c2al_batch_rows",
            "Rows per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.responses = Counter("c2al_score_responses", "Responses by HTTP status", ["status"], registry=self.registry)
        self.rows = Counter("c2al_scored_rows", "Rows scored", registry=self.registry)
        self.queue_depth = Gauge("c2al_queue_depth", "Requests waiting to be batched", registry=self.registry)
        self.limit_rejections = Counter(
            "c2al_limit_rejections", "Requests refused by a serving limit", ["limit"], registry=self.registry
        )
        self._by_limit = {name: self.limit_rejections.labels(name) for name in LIMIT_NAMES}  # all shown from 0
        self._by_status: dict[int, Any] = {}

    def limit(self, name: str) -> None:
        """Count one request refused by the limit ``name`` (one of ``LIMIT_NAMES``)."""
        self._by_limit[name].inc()

    def answered(self, status: int, t0: float) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.responses.labels(str(status))
        child.inc()
        self.latency.observe(time.perf_counter() - t0)
