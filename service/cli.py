"""The `zipedge` command: on-demand ZIP downloads of many photos, streamed at once with an
exact size. Subcommands take a few flags; everything else is configured through
environment variables (ZIPEDGE_SOURCE, ZIPEDGE_CACHE, ZIPEDGE_REDIS_URL, ...)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service import __version__, constants, eventloop, tracing
from service.exceptions import ConfigError, RequestError
from service.logs import configure as configure_logging
from service.logs import uvicorn_log_config
from service.malloc import keep_freed_memory
from service.settings import Settings, log_format_of


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()  # fail fast, before the server binds
    if settings.source.scheme == "file" and not settings.source.path.is_dir():
        print(
            f"zipedge: the source folder {settings.source.path} does not exist "
            "(run `zipedge demo` for demo photos, or set ZIPEDGE_SOURCE)",
            file=sys.stderr,
        )
        return 2
    workers = args.workers if args.workers is not None else default_workers(settings)
    if workers > 1 and not settings.redis_url:
        print(
            f"zipedge serve: --workers {workers} needs ZIPEDGE_REDIS_URL. Without Redis the job "
            "runner, the build lock, the stream and rate limits and the in-process memos "
            "belong to one process: a job submitted to one worker would be unknown to the "
            "next. Set ZIPEDGE_REDIS_URL, or serve with --workers 1.",
            file=sys.stderr,
        )
        return 2
    url = f"http://{args.host}:{args.port}"
    plural = "es" if workers > 1 else ""
    _say(f"zipedge: serving {settings.source} on {url} ({workers} process{plural})")
    keep_freed_memory()
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": args.access_log,
        "timeout_graceful_shutdown": constants.SERVER_GRACEFUL_SHUTDOWN_S,
        **server_limits(settings),
    }
    log_config = uvicorn_log_config(settings.log_format, args.log_level)
    if log_config is not None:
        options["log_config"] = log_config  # else uvicorn's own text format, as always
    if workers == 1:
        from service.app import create_app

        tracing.setup(settings.otel_endpoint, settings.otel_service_name)
        try:
            uvicorn.run(create_app(settings), **options)
        finally:
            tracing.shutdown()  # the spans still batched
        return 0
    # Each worker process imports the app and reads the settings itself (its own S3 pool,
    # Redis client, listing cache, tracer); they share the listening socket, bound by this
    # one, which supervises them: a worker that dies is replaced, SIGTERM stops them all.
    from service.metrics import shared_metrics_dir

    with shared_metrics_dir(settings):
        uvicorn.run(WORKER_APP, factory=True, workers=workers, **options)
    return 0


#: The app factory every worker of `zipedge serve --workers N` imports.
WORKER_APP = "service.cli:worker_app"


def worker_app() -> Any:
    """The application of one worker process: logging as `zipedge` sets it up, settings
    read from the environment it inherited."""
    import atexit

    from service.app import create_app

    settings = Settings.from_env()
    configure_logging(settings.log_format)
    keep_freed_memory()  # mallopt's thresholds are per process, and workers are spawned
    # A spawned process: the parent's tracer provider and its export thread are not here.
    tracing.setup(settings.otel_endpoint, settings.otel_service_name)
    atexit.register(tracing.shutdown)  # the spans still batched when the worker stops
    return create_app(settings)


def default_workers(settings: Settings) -> int:
    """Every core when Redis is configured (what coordinates the processes), else one."""
    if not settings.redis_url:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may run on
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def server_limits(settings: Settings) -> dict[str, Any]:
    """What uvicorn refuses before the app sees a request. uvicorn has no timeout for
    reading a request's headers: a slowloris client is cut by nginx in front
    (`client_header_timeout`), and `limit_concurrency` keeps one process's sockets bounded
    meanwhile. uvicorn's own refusals are plain text; behind nginx they become JSON."""
    return {
        # No WebSockets here: nothing to offer, nothing for uvicorn to load.
        "ws": "none",
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
        from service.demo import EXAMPLE_DAYS, write_demo_photos, write_example_photos
    except ImportError as exc:  # Pillow is the `demo` extra
        print(f"zipedge demo needs Pillow ({exc}): pip install 'zipedge[demo]'", file=sys.stderr)
        return 2

    settings = Settings.from_env()
    root = Path(args.dir) if args.dir else settings.source.path
    if not args.dir and settings.source.scheme != "file":
        print("zipedge demo: ZIPEDGE_SOURCE is not a folder; pass --dir", file=sys.stderr)
        return 2
    end = datetime.now(UTC).date()
    start = end - timedelta(days=args.days - 1)
    count = write_demo_photos(root, days=args.days, per_day=args.per_day, end=end)
    print(f"zipedge demo: photos in {root} for {start} .. {end} (today's up to now)")
    if args.examples:
        count += write_example_photos(root, per_day=args.per_day)
        first, last = EXAMPLE_DAYS
        print(f"zipedge demo: and for {first} .. {last}, the days of the README's examples")
    print(f"zipedge demo: {count} new photos written")
    # -L: with an S3 cache, once the archive is cached the link redirects to it.
    print(f"  try: curl -LOJ '{args.url.rstrip('/')}/v1/zip?from={start}&to={end}'")
    return 0


def _stack(args: argparse.Namespace) -> int:
    from service.stack.local import run

    return run(Path(args.dir), days=args.days, per_day=args.per_day, edge_port=args.edge_port)


def _worker(args: argparse.Namespace) -> int:
    from service.jobs.saq_queue import run_worker

    settings = Settings.from_env()
    if not settings.redis_url:
        print("zipedge worker: set ZIPEDGE_REDIS_URL (jobs are shared through Redis)", file=sys.stderr)
        return 2
    concurrency = args.concurrency if args.concurrency is not None else settings.worker_concurrency
    _say(f"zipedge worker: {concurrency} jobs at a time from {settings.redis_url}")
    keep_freed_memory()
    tracing.setup(settings.otel_endpoint, settings.otel_service_name)
    try:
        eventloop.run(
            run_worker(settings, concurrency=concurrency, burst=args.burst, metrics_port=args.metrics_port)
        )
    finally:
        tracing.shutdown()
    return 0


def _janitor(args: argparse.Namespace) -> int:
    from service.janitor import run_janitor
    from service.runtime import open_runtime
    from service.uploads import uploads_of

    async def sweep() -> list[str]:
        async with open_runtime(Settings.from_env()) as runtime:
            return await run_janitor(runtime, uploads_of(runtime))

    lines = eventloop.run(sweep())
    for line in lines:
        print(f"zipedge janitor: {line}")
    print(f"zipedge janitor: done, {len(lines)} thing{'' if len(lines) == 1 else 's'} removed or reported")
    return 0


def _index(args: argparse.Namespace) -> int:
    from service.archive.selection import parse_date_range
    from service.indexer import index_days
    from service.runtime import open_runtime

    settings = Settings.from_env()
    selection = parse_date_range(args.from_, args.to, max_days=settings.max_range_days)
    concurrency = args.concurrency or settings.fetch_concurrency

    def show(line: str) -> None:
        print(f"zipedge index: {line}", file=sys.stderr, flush=True)

    async def run() -> int:
        async with open_runtime(settings) as runtime:
            report = await index_days(runtime, selection, concurrency=concurrency, progress=show)
        for failure in report.failed:
            show(f"failed: {failure}")
        show(
            f"done: {report.learned} CRCs learned, {report.known} already known, "
            f"{len(report.failed)} failed, in {report.seconds:.1f} s"
        )
        return 1 if report.failed else 0

    return eventloop.run(run())


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option shows its default; an option whose default is None says in its own
    words what happens without it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


EPILOG = """Configuration: README.md ("Configuration") lists every environment variable;
the HTTP API is docs/api.md, deployment docs/deployment.md. Run `zipedge COMMAND --help`
for the options of one command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zipedge", description=__doc__, epilog=EPILOG, formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, formatter_class=_HelpFormatter)

    serve = command("serve", "run the HTTP service (the page at /, the API under /v1)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )
    serve.add_argument(
        "--access-log", action=argparse.BooleanOptionalAction, default=True, help="log one line per request"
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="processes serving the one port (default: one per CPU core when ZIPEDGE_REDIS_URL "
        "is set, else 1). More than one needs Redis: without it the job runner, the build lock, "
        "the limits and the memos are per process",
    )
    serve.set_defaults(func=_serve)

    worker = command("worker", "run background jobs: archives too large to stream (needs ZIPEDGE_REDIS_URL)")
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobs at a time (default: ZIPEDGE_WORKER_CONCURRENCY, itself 2 by default)",
    )
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics on 127.0.0.1:PORT; 0: no metrics server"
    )
    worker.set_defaults(func=_worker)

    demo = command("demo", "write demo photos into the source folder")
    demo.add_argument(
        "--dir",
        default=None,
        help="target folder (default: the ZIPEDGE_SOURCE folder; ./var/demo when unset)",
    )
    demo.add_argument("--days", type=int, default=5, help="days of photos, ending today (UTC)")
    demo.add_argument("--per-day", type=int, default=40, help="photos per day")
    demo.add_argument(
        "--examples",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write 2025-01-01 .. 2025-01-05, the days of the README's examples",
    )
    demo.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the service's URL, for the printed link"
    )
    demo.set_defaults(func=_demo)

    stack = command(
        "stack", "run the whole local stack (S3, Redis, service, worker, nginx, edge) on loopback"
    )
    stack.add_argument("--dir", default="var/stack", help="state and logs")
    stack.add_argument(
        "--days",
        type=int,
        default=5,
        help="days of demo photos, ending today (UTC); unused when ZIPEDGE_SOURCE is a folder",
    )
    stack.add_argument(
        "--per-day", type=int, default=40, help="demo photos per day; unused when ZIPEDGE_SOURCE is a folder"
    )
    stack.add_argument("--edge-port", type=int, default=0, help="the edge's port; 0: a free one")
    stack.set_defaults(func=_stack)

    index = command(
        "index",
        "learn the CRC-32 of every object of these days not in the object index yet (reads each once)",
    )
    index.add_argument("--from", dest="from_", required=True, metavar="YYYY-MM-DD", help="first UTC day")
    index.add_argument("--to", required=True, metavar="YYYY-MM-DD", help="last UTC day (inclusive)")
    index.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="objects read at once (default: ZIPEDGE_FETCH_CONCURRENCY)",
    )
    index.set_defaults(func=_index)

    janitor = command(
        "janitor", "remove abandoned uploads and stale cache multipart uploads now (also a worker task)"
    )
    janitor.set_defaults(func=_janitor)
    return parser


_log_format = "text"


def _say(message: str, level: int = logging.INFO) -> None:
    """A line for whoever runs the command, on stderr; a log record when the logs are JSON,
    so that every line of the output is one JSON object."""
    if _log_format == "json":
        logging.getLogger("zipedge").log(level, message)
    else:
        print(message, file=sys.stderr, flush=True)


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    global _log_format
    args = build_parser().parse_args(argv)
    try:
        _log_format = log_format_of()
        configure_logging(_log_format)
        code: int = args.func(args)
    except ConfigError as exc:
        _say(f"zipedge: configuration error: {exc.message}", logging.ERROR)
        return 2
    except RequestError as exc:  # e.g. `zipedge index --from` not a day
        print(f"zipedge {args.command}: {exc.message}", file=sys.stderr)
        return 2
    return code
