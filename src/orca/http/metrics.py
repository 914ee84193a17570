"""GET /metrics for Prometheus: request figures, and Orca's state read when scraped."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orca.bootstrap import Services


class OrcaState(Collector):
    """Figures read from the read models at scrape time, never counted in memory."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._services
        counts = s.queries.counts()
        executions = GaugeMetricFamily("orca_executions", "Executions by status", labels=["status"])
        for status in ("pending", "running", "completed", "failed", "timeout", "cancelled"):
            executions.add_metric([status], getattr(counts.executions, status))
        yield executions
        jobs = GaugeMetricFamily("orca_jobs", "Jobs by status", labels=["status"])
        for status in ("pending", "running", "completed", "failed", "cancelled"):
            jobs.add_metric([status], getattr(counts.jobs, status))
        yield jobs
        yield GaugeMetricFamily(
            "orca_queue_depth", "Executions waiting to start", value=counts.executions.pending
        )
        yield GaugeMetricFamily(
            "orca_projection_lag_events",
            "Events recorded but not yet in the read models",
            value=s.projection_lag(),
        )
        yield GaugeMetricFamily(
            "orca_projection_failed_events",
            "Events the read models passed over because they could not be projected",
            value=s.queries.projection_failures(),
        )
        engine = s.workers.engine()
        yield GaugeMetricFamily("orca_workers", "Live workers", value=engine.workers)
        yield GaugeMetricFamily(
            "orca_executor_slots_in_use", "Executions running on live workers", value=engine.running
        )
        yield GaugeMetricFamily(
            "orca_executor_slots", "Execution slots of live workers", value=engine.capacity
        )


class Metrics:
    """Counts and times every request, by handler (not by path: ids would explode labels)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "orca_http_requests",
            "HTTP requests",
            ["method", "handler", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "orca_http_request_duration_seconds",
            "HTTP request latency",
            ["handler"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            endpoint = scope.get("endpoint")
            handler = getattr(endpoint, "__name__", "unmatched")
            self.requests.labels(scope["method"], handler, str(status)).inc()
            self.latency.labels(handler).observe(time.perf_counter() - started)


async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
