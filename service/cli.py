"""The `zipedge` command. Subcommands map flags onto settings; everything else is
configured through the environment (README.md, "Configuration")."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.exceptions import ConfigError
from service.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app

    settings = Settings.from_env()  # fail fast, before the server binds
    if settings.source.scheme == "file" and not settings.source.path.is_dir():
        print(
            f"zipedge: the source folder {settings.source.path} does not exist "
            "(run `zipedge demo` for demo photos, or set ZIPEDGE_SOURCE)",
            file=sys.stderr,
        )
        return 2
    url = f"http://{args.host}:{args.port}"
    print(f"zipedge: serving {settings.source} on {url}", file=sys.stderr, flush=True)
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
        **server_limits(settings),
    )
    return 0


def server_limits(settings: Settings) -> dict[str, Any]:
    """What uvicorn refuses before the app sees a request. uvicorn has no timeout for
    reading a request's headers: a slowloris client is cut by nginx in front
    (`client_header_timeout`), and `limit_concurrency` keeps one process's sockets bounded
    meanwhile. uvicorn's own refusals are plain text; behind nginx they become JSON."""
    from service import constants

    return {
        # The header block h11 buffers (httptools, uvicorn's default parser when
        # installed, stops at its own 80 KiB).
        "h11_max_incomplete_event_size": constants.SERVER_MAX_HEADER_BYTES,
        "limit_concurrency": constants.SERVER_MAX_CONCURRENCY,
        "timeout_keep_alive": constants.SERVER_KEEP_ALIVE_S,
        # uvicorn rewrites the client address from X-Forwarded-For only for the proxies
        # the service trusts itself (ZIPEDGE_TRUSTED_PROXIES), so both agree.
        "forwarded_allow_ips": [str(network) for network in settings.limits.trusted_proxies],
    }


def _demo(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    try:
        from service.demo import write_demo_photos
    except ImportError as exc:  # Pillow is the `demo` extra
        print(f"zipedge demo needs Pillow ({exc}): pip install 'zipedge[demo]'", file=sys.stderr)
        return 2

    settings = Settings.from_env()
    root = Path(args.dir) if args.dir else settings.source.path
    if not args.dir and settings.source.scheme != "file":
        print("zipedge demo: ZIPEDGE_SOURCE is not a folder; pass --dir", file=sys.stderr)
        return 2
    end = datetime.now(UTC).date()
    count = write_demo_photos(root, days=args.days, per_day=args.per_day, end=end)
    start = end - timedelta(days=args.days - 1)
    print(f"zipedge demo: {count} photos in {root} for {start} .. {end}")
    print(f"  try: http://127.0.0.1:8000/v1/zip?from={start}&to={end}")
    return 0


def _stack(args: argparse.Namespace) -> int:
    from service.stack.local import run

    return run(Path(args.dir), days=args.days, per_day=args.per_day, edge_port=args.edge_port)


def _worker(args: argparse.Namespace) -> int:
    import asyncio

    from service.jobs.saq_queue import run_worker

    settings = Settings.from_env()
    if not settings.redis_url:
        print("zipedge worker: set ZIPEDGE_REDIS_URL (jobs are shared through Redis)", file=sys.stderr)
        return 2
    concurrency = args.concurrency or settings.worker_concurrency
    print(
        f"zipedge worker: {concurrency} jobs at a time from {settings.redis_url}", file=sys.stderr, flush=True
    )
    asyncio.run(
        run_worker(settings, concurrency=concurrency, burst=args.burst, metrics_port=args.metrics_port)
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zipedge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    serve.set_defaults(func=_serve)

    worker = commands.add_parser("worker", help="run background jobs (needs ZIPEDGE_REDIS_URL)")
    worker.add_argument(
        "--concurrency", type=int, default=0, help="jobs at a time (ZIPEDGE_WORKER_CONCURRENCY)"
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on 127.0.0.1:PORT")
    worker.set_defaults(func=_worker)

    demo = commands.add_parser("demo", help="write demo photos into the source folder")
    demo.add_argument("--dir", help="target folder (default: the ZIPEDGE_SOURCE folder)")
    demo.add_argument("--days", type=int, default=5)
    demo.add_argument("--per-day", type=int, default=40)
    demo.set_defaults(func=_demo)

    stack = commands.add_parser(
        "stack", help="run the whole local stack (S3, Redis, service, nginx, edge) on loopback"
    )
    stack.add_argument("--dir", default="var/stack", help="state and logs (default: ./var/stack)")
    stack.add_argument("--days", type=int, default=5, help="days of demo photos, ending today (UTC)")
    stack.add_argument("--per-day", type=int, default=40, help="demo photos per day")
    stack.add_argument("--edge-port", type=int, default=0, help="the edge's port (default: a free one)")
    stack.set_defaults(func=_stack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"zipedge: configuration error: {exc.message}", file=sys.stderr)
        return 2
    return code
