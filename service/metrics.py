"""Prometheus metrics: what an operator needs to see that streams, the cache and jobs work.

One registry per process (service and each worker). The service serves it at /metrics;
`zipedge worker --metrics-port` serves a worker's.

`zipedge serve --workers N` runs N processes behind one port, and a scrape reaches any one
of them: there the processes write their metrics into one directory (prometheus_client's
multiprocess mode, `Settings.metrics_dir`) and /metrics adds them all up, so counters
never jump between scrapes. Each gauge says how its processes' values combine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import METRICS_DIR_VARIABLE, Settings, pass_to_workers

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
STREAMS_ACTIVE = Gauge(
    "zipedge_streams_active", "Archive streams in progress.", registry=REGISTRY, multiprocess_mode="livesum"
)
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
# Probes and the queue depth read shared state: the latest value, whichever process set it.
READY = Gauge(
    "zipedge_ready",
    "1 when every dependency answered the last readiness probe, else 0.",
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
DEPENDENCY_UP = Gauge(
    "zipedge_dependency_up",
    "1 when the dependency answered the last readiness probe in time, else 0.",
    ["dependency"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
JOBS_QUEUED = Gauge(
    "zipedge_jobs_queued",
    "Jobs waiting for a worker (at scrape time).",
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
EVENT_LOOP_TASKS = Gauge(
    "zipedge_event_loop_tasks",
    "asyncio tasks alive in the serving process (one series per process with --workers): "
    "flat while the load is, so a leak shows as a climb.",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)
JOB_SECONDS = Histogram(
    "zipedge_job_duration_seconds",
    "Duration of job attempts by outcome (ready, failed, cancelled).",
    ["outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600, 7200),
    registry=REGISTRY,
)


def render(settings: Settings) -> bytes:
    if settings.metrics_dir is None:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.metrics_dir))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


@contextlib.contextmanager
def shared_metrics_dir(settings: Settings) -> Iterator[Path]:
    """The directory the worker processes about to start write their metrics into: the
    configured one, emptied (what a previous run left must not be added up), or a fresh
    one, removed afterwards."""
    if settings.metrics_dir is not None:
        settings.metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in settings.metrics_dir.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield settings.metrics_dir
        return
    directory = Path(tempfile.mkdtemp(prefix="zipedge-metrics-"))
    pass_to_workers(METRICS_DIR_VARIABLE, str(directory))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def process_exited(settings: Settings) -> None:
    """This process stops serving: its live gauges leave the sums (its counters stay)."""
    if settings.metrics_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), path=str(settings.metrics_dir))  # type: ignore[no-untyped-call]


async def watch_event_loop(interval_s: float) -> None:
    """Record the event loop's task count every `interval_s` until cancelled."""
    while True:
        EVENT_LOOP_TASKS.set(len(asyncio.all_tasks()))
        await asyncio.sleep(interval_s)


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
