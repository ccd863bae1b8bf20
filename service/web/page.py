"""The web page at `/`: one static HTML file plus its CSS and JS under `/static`.

No templating and no build step. The page carries no inline script or style, so it is
served with a strict Content-Security-Policy (everything same-origin, plus the storage
origin that upload bodies are PUT to when storage receives them directly). As the dates
change it asks `/v1/days`, to show which days have photos and the archive's size.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service.web.context import services

__all__ = ["CSP", "STATIC_DIR", "csp_for", "routes"]

STATIC_DIR = Path(__file__).parent / "static"

#: Everything same-origin; no plugins, no framing, no <base> tricks.
CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"


def csp_for(upload_origin: str) -> str:
    """The page's CSP: with uploads going straight to storage, `connect-src` also allows
    that one origin (the presigned PUT), and nothing broader."""
    if not upload_origin:
        return CSP
    return f"{CSP}; connect-src 'self' {upload_origin}"


# Revalidate every time (cheap: ETag/Last-Modified), so a deploy never pairs a new
# index.html with an old app.js from the browser's heuristic cache.
_NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


class _StaticFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_NO_CACHE)
        return response


async def index(request: Request) -> Response:
    policy = csp_for(services(request).runtime.settings.upload_origin)
    headers = {**_NO_CACHE, "Content-Security-Policy": policy, "Referrer-Policy": "same-origin"}
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=headers)


async def favicon(request: Request) -> Response:
    # Browsers ask for it unprompted; an empty answer keeps the console free of 404s.
    return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET", "HEAD"], name="page"),
    Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
    Mount("/static", app=_StaticFiles(directory=STATIC_DIR), name="static"),
]
