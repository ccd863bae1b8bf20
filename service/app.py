"""`create_app(settings)`: the Starlette application; wiring only, no logic."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware

from service.jobs.queue import JobQueue, LocalJobQueue
from service.metrics import MetricsMiddleware
from service.runtime import Runtime, open_runtime
from service.settings import Settings
from service.web.errors import exception_handlers
from service.web.routes import routes

logger = logging.getLogger("service")


@contextlib.asynccontextmanager
async def open_jobs(runtime: Runtime) -> AsyncIterator[JobQueue]:
    """saq on Redis when configured (any number of workers), else the in-process runner."""
    jobs: JobQueue
    if runtime.settings.redis_url:
        from service.jobs.saq_queue import SaqJobQueue

        saq_jobs = SaqJobQueue(runtime, runtime.settings.redis_url)
        jobs = saq_jobs
    else:
        jobs = LocalJobQueue(runtime, concurrency=runtime.settings.worker_concurrency)
    try:
        yield jobs
    finally:
        await jobs.aclose()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime, open_jobs(runtime) as jobs:
            app.state.runtime = runtime
            app.state.jobs = jobs
            # Everything built so far (modules, clients) lives as long as the process: keep it
            # out of full collections, whose pauses were the redirect latency's p99.
            gc.freeze()
            logger.info("zipedge serving %s", settings.source)
            yield

    return Starlette(
        routes=routes,
        exception_handlers=exception_handlers,
        middleware=[Middleware(MetricsMiddleware)],
        lifespan=lifespan,
    )
