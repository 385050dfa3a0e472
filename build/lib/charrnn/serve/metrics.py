"""GET /metrics: the server in the Prometheus text format, for the tools a team already runs.

Requests by route and status, their latency, refusals by reason, and the batcher's state (rows in
the last step, requests in progress and waiting, characters generated). Each app has a registry
of its own (prometheus_client's default one is process-wide).
"""
from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily

disable_created_metrics()  # the *_created series: a timestamp per label set, noise for a dashboard

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROUTES = ("/", "/healthz", "/favicon.ico", "/metrics", "/v1/model", "/v1/stats", "/v1/generate", "/v1/completions",
          "/v1/models")


class Metrics:
    def __init__(self, batcher, policy):
        self.registry = CollectorRegistry()
        self.requests = Counter("charrnn_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("charrnn_request_seconds", "time to the end of an answer (a stream's included)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        gauges = {"charrnn_batch_rows": ("rows advanced in the last step", lambda: batcher.last_rows),
                  "charrnn_requests_in_progress": ("requests generating", lambda: len(batcher.active)),
                  "charrnn_requests_waiting": ("requests waiting to start", lambda: len(batcher.waiting))}
        for name, (doc, read) in gauges.items():
            Gauge(name, doc, registry=self.registry).set_function(read)
        self.registry.register(_Counts(batcher, policy))

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def text(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Counts:
    """The batcher's and the guard's own counters, read when scraped."""

    def __init__(self, batcher, policy):
        self.batcher, self.policy = batcher, policy

    def collect(self):
        counts = self.batcher.counts
        chars = CounterMetricFamily("charrnn_chars_generated", "characters generated, all rows")
        chars.add_metric([], counts["chars_generated"])
        steps = CounterMetricFamily("charrnn_batch_steps", "batched generation steps")
        steps.add_metric([], counts["steps"])
        ended = CounterMetricFamily("charrnn_generations", "requests that ended generating, by outcome", labels=["outcome"])
        for outcome in ("served", "cancelled", "timed_out", "failed"):
            ended.add_metric([outcome], counts[f"requests_{outcome}"])
        refused = CounterMetricFamily("charrnn_refused", "requests refused before any work, by reason", labels=["reason"])
        for reason, count in sorted({**self.policy.refused, "busy": counts["requests_refused"]}.items()):
            refused.add_metric([reason], count)
        yield from (chars, steps, ended, refused)


def route_of(path: str) -> str:
    """A bounded label for a path: the route it is, "/static", or "other"."""
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "other"


class Observed:
    """ASGI middleware: every HTTP answer counted by route and status, and timed to its last byte."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), [500]

        async def send_observed(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.observe(route_of(scope.get("path", "")), status[0], time.monotonic() - started)
