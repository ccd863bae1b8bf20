"""`create_app(settings)`: the Starlette application and the lifespan that composes it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware import Middleware

from service.constants import EVENT_LOOP_STATS_S, GIL_SWITCH_INTERVAL_S
from service.downloads import Downloads
from service.jobs.build import ArchiveBuilder
from service.jobs.queue import JobQueue
from service.metrics import MetricsMiddleware, process_exited, watch_event_loop
from service.quotas import Quotas
from service.runtime import Runtime, open_runtime
from service.settings import Settings
from service.streams import Streams
from service.tracing import TracingMiddleware
from service.uploads import Uploads, uploads_of
from service.web.auth import AuthMiddleware
from service.web.errors import exception_handlers
from service.web.routes import routes

logger = logging.getLogger("service")


@dataclass(frozen=True, slots=True)
class Services:
    """What the handlers reach through `request.app.state.services`."""

    runtime: Runtime
    downloads: Downloads
    jobs: JobQueue
    streams: Streams
    uploads: Uploads
    quotas: Quotas


@contextlib.asynccontextmanager
async def open_jobs(runtime: Runtime, streams: Streams) -> AsyncIterator[JobQueue]:
    """saq on Redis when configured (any number of workers), else the in-process runner."""
    jobs: JobQueue
    settings = runtime.settings
    if settings.redis_url:
        from service.jobs.saq_queue import SaqJobQueue

        jobs = SaqJobQueue(settings, runtime.manifests)
    else:
        from service.jobs.local import LocalJobQueue

        builder = ArchiveBuilder(runtime, streams)
        jobs = LocalJobQueue(
            builder,
            concurrency=settings.worker_concurrency,
            retry_delay_s=settings.job_retry_delay_s,
            max_per_client=settings.limits.max_jobs_per_client,
        )
    try:
        yield jobs
    finally:
        await jobs.aclose()


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with open_runtime(settings) as runtime, contextlib.AsyncExitStack() as stack:
        streams = Streams(runtime)
        stack.push_async_callback(streams.aclose)
        jobs = await stack.enter_async_context(open_jobs(runtime, streams))
        uploads = uploads_of(runtime)
        if not settings.redis_url:
            # No worker without Redis: this process sweeps abandoned uploads itself.
            from service.janitor import periodic_janitor

            await stack.enter_async_context(periodic_janitor(runtime, uploads))
        quotas = Quotas(settings.limits, runtime.redis, redis_url=settings.redis_url)
        stack.push_async_callback(quotas.aclose)
        yield Services(
            runtime=runtime,
            downloads=Downloads(runtime, streams, jobs),
            jobs=jobs,
            streams=streams,
            uploads=uploads,
            quotas=quotas,
        )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with open_services(settings) as services:
                app.state.services = services
                # Everything built so far (modules, clients) lives as long as the process: keep
                # it out of full collections, whose pauses were the redirect latency's p99.
                gc.freeze()
                # The loop waits up to this long for the GIL each time it wakes while a
                # worker thread builds a large manifest.
                sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
                watch = asyncio.create_task(watch_event_loop(EVENT_LOOP_STATS_S))
                logger.info("zipedge serving %s", settings.source)
                try:
                    yield
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
        finally:
            process_exited(settings)

    return Starlette(
        routes=routes,
        exception_handlers=exception_handlers,
        # Outermost first: refused requests are counted too.
        middleware=[
            Middleware(TracingMiddleware),
            Middleware(MetricsMiddleware),
            Middleware(AuthMiddleware, settings=settings),
        ],
        lifespan=lifespan,
    )
