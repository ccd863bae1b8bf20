"""Prometheus metrics: what an operator needs to see that streams, the cache and jobs work.

One registry per process (service and each worker). The service serves it at /metrics;
`zipedge worker --metrics-port` serves a worker's.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "zipedge_requests_total",
    "HTTP requests by route and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "zipedge_request_duration_seconds",
    "Time from request to the last byte of the response.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
STREAM_BYTES = Counter("zipedge_stream_bytes_total", "Archive bytes sent to clients.", registry=REGISTRY)
STREAMS_ACTIVE = Gauge("zipedge_streams_active", "Archive streams in progress.", registry=REGISTRY)
STREAM_OUTCOMES = Counter(
    "zipedge_stream_outcomes_total",
    "How archive streams ended: complete, aborted (a source failed) or disconnected.",
    ["outcome"],
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "zipedge_cache_lookups_total", "Cache lookups by result (hit, miss).", ["result"], registry=REGISTRY
)
CACHE_WRITES = Counter(
    "zipedge_cache_writes_total",
    "Cache writes by outcome (committed, exists, dropped, failed).",
    ["outcome"],
    registry=REGISTRY,
)
SOURCE_ERRORS = Counter(
    "zipedge_source_errors_total", "Failed object reads by error code.", ["code"], registry=REGISTRY
)
LISTING_SKIPPED = Counter(
    "zipedge_listing_skipped_total",
    "Listed objects left out of archives because no read would accept their key.",
    registry=REGISTRY,
)
CACHE_MISCONFIGURED = Counter(
    "zipedge_cache_misconfigured_total",
    "Cache requests refused with 403 (bucket policy or credentials): streamed without teeing.",
    registry=REGISTRY,
)
RANGE_CRC_READS = Counter(
    "zipedge_range_crc_reads_total",
    "Members read whole only to learn the CRC-32 a ranged answer's records need.",
    registry=REGISTRY,
)
SOURCE_RETRIES = Counter(
    "zipedge_source_retries_total", "Object reads resumed from the failed byte.", registry=REGISTRY
)
READY = Gauge(
    "zipedge_ready", "1 when every dependency answered the last readiness probe, else 0.", registry=REGISTRY
)
DEPENDENCY_UP = Gauge(
    "zipedge_dependency_up",
    "1 when the dependency answered the last readiness probe in time, else 0.",
    ["dependency"],
    registry=REGISTRY,
)
JOBS_QUEUED = Gauge("zipedge_jobs_queued", "Jobs waiting for a worker (at scrape time).", registry=REGISTRY)
JOB_SECONDS = Histogram(
    "zipedge_job_duration_seconds",
    "Duration of job attempts by outcome (ready, failed, cancelled).",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200),
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)


class MetricsMiddleware:
    """Counts and times every request by its route's endpoint name (not its path, which
    holds ids). Pure ASGI, so streaming bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched") if endpoint is not None else "unmatched"
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
