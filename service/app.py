"""`create_app(settings)`: the Starlette application; wiring only, no logic."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from service.runtime import open_runtime
from service.settings import Settings
from service.web.errors import exception_handlers
from service.web.routes import routes

logger = logging.getLogger("service")


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings) as runtime:
            app.state.runtime = runtime
            logger.info("zipedge serving %s", settings.source)
            yield

    return Starlette(routes=routes, exception_handlers=exception_handlers, lifespan=lifespan)
