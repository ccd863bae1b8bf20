"""The reference for the redirect figure: a Starlette app that answers every
`GET /v1/zip` with the same 302, under the same uvicorn settings as `zipedge serve`
(one process, uvloop + httptools when installed, log level info, access log on,
service/cli.py), so the gap to zipedge is what the service does per request.

    python -m bench.trivial_app --port 8001 --location 'http://…'   # prints "listening …"
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route


def create_app(location: str) -> Starlette:
    async def redirect(request: Request) -> Response:
        # Same status and headers as the service's redirect to a cached archive.
        return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            Route("/v1/zip", redirect, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.trivial_app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--location", required=True, help="the constant Location of every 302")
    args = p.parse_args(argv)
    # The arguments `zipedge serve` passes to uvicorn.run with its defaults (service/cli.py).
    uvicorn.run(
        create_app(args.location),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
