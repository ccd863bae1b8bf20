"""`zipedge stack`: the whole deployment on loopback, without Docker.

SeaweedFS (S3, with the source and cache buckets, and the photos: demo ones, or those of
the folder the caller's ZIPEDGE_SOURCE names), redis-server, the
service (`zipedge serve` in a subprocess), the worker once `zipedge worker` exists, the
reverse proxy from `nginx/` and the edge cache from `edge/`, each on a free 127.0.0.1
port, state under one directory. It prints one `<name>: <url>` line per component on
stdout (progress goes to stderr), then supervises: a component that dies stops
everything (exit 1); SIGINT/SIGTERM stop everything in reverse start order (exit 0).

The component list is `LocalStack.specs()`: add a spec there to run one more process.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TextIO, TypeVar

from service.settings import S3Settings, Settings
from service.stack.nginx import Nginx, answers
from service.stack.ports import HOST, free_port, free_ports_with_offset
from service.stack.process import ManagedProcess
from service.stack.redis import RedisServer
from service.stack.seaweedfs import SeaweedFS
from service.stack.seed import (
    configure_lifecycle,
    configure_uploads,
    photo_days,
    source_folder,
    upload_photos,
)
from service.stack.supervisor import ComponentSpec, supervise

SOURCE_BUCKET = "zipedge"
SOURCE_PREFIX = "photos"
CACHE_BUCKET = "zipedge-cache"
CACHE_PREFIX = "archives"
#: Cache objects are content-addressed and rebuilt on demand, so a short life only costs
#: a rebuild; a local stack should not grow without bound.
CACHE_EXPIRE_DAYS = 7
#: A multipart upload left by a crashed build is garbage after a day (no build takes that).
ABORT_MULTIPART_DAYS = 1

#: Edge settings for the local stack (see edge/README.md).
EDGE_SLICE_SIZE = "8m"
EDGE_CACHE_VALID = "1h"
EDGE_CACHE_MAX_SIZE = "2g"


def edge_nginx(
    root: Path, data_dir: Path, *, port: int | None, api_upstream: str, origin: str, cache_bucket: str
) -> Nginx:
    """The edge cache of `edge/nginx.conf.template` under `root`, with the settings above.
    `origin` is the S3 host:port the service signs redirect URLs for."""
    return Nginx(
        "edge",
        root / "edge" / "nginx.conf.template",
        data_dir,
        port=port,
        api_upstream=api_upstream,
        origin=origin,
        cache_bucket=cache_bucket,
        slice_size=EDGE_SLICE_SIZE,
        cache_valid=EDGE_CACHE_VALID,
        cache_max_size=EDGE_CACHE_MAX_SIZE,
    )


SERVICE_START_TIMEOUT_S = 60.0
#: uvicorn's own graceful shutdown (SERVER_GRACEFUL_SHUTDOWN_S, 10 s), then the lifespan's
SERVICE_STOP_TIMEOUT_S = 15.0
#: `zipedge serve --workers`: two processes behind one port, not one per core of a laptop.
SERVICE_WORKERS = 2
#: SeaweedFS stops in about a second, but now and then (stopped soon after it started) its
#: volume server waits on an open connection until it is killed. Nothing is lost by the
#: kill: it comes after everything that writes to S3 has stopped, what it wrote is in the
#: files (a killed process loses no written data) and its log-structured stores are
#: crash-safe; the photos are uploaded again at every start anyway.
S3_STOP_TIMEOUT_S = 5.0
_SERVICE_START_ATTEMPTS = 3

_T = TypeVar("_T")


def repo_root() -> Path:
    """The checkout holding `nginx/` and `edge/` (the templates are not in the package)."""
    root = Path(__file__).resolve().parents[2]
    for template in (root / "nginx" / "nginx.conf.template", root / "edge" / "nginx.conf.template"):
        if not template.is_file():
            raise FileNotFoundError(f"{template} not found: `zipedge stack` runs from a source checkout")
    return root


class ZipedgeProcess(ManagedProcess):
    """`python -m service <command>` with the stack's environment; with `http=True` it
    is `serve` on a free port and ready when /readyz answers 200."""

    stop_timeout_s = SERVICE_STOP_TIMEOUT_S
    kill_group = True  # the workers of `serve --workers N` would outlive a killed supervisor

    def __init__(
        self, name: str, args: list[str], data_dir: Path, env: dict[str, str], *, http: bool = False
    ) -> None:
        self.name = name
        self.args = args
        self.data_dir = data_dir
        self.env = env
        self.http = http
        self.port = 0
        self.log_path = data_dir / f"{name}.log"
        super().__init__()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError(f"{self.name} is not started")
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._launch(
            self.name,
            spawn=self._spawn,
            ready=self._ready,
            deadline=time.monotonic() + SERVICE_START_TIMEOUT_S,
            attempts=_SERVICE_START_ATTEMPTS,
            retry=self.http,
            poll_s=0.1,
        )

    def _spawn(self) -> None:
        args = [sys.executable, "-m", "service", *self.args]
        if self.http:
            self.port = free_port()
            args += ["--host", HOST, "--port", str(self.port)]
        self._popen(args, cwd=self.data_dir, env=self.env)

    def _ready(self) -> bool:
        if not self.http:
            return True  # nothing to ask; alive is all we can tell
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2.0)
        try:
            conn.request("GET", "/readyz")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except OSError:
            return False
        finally:
            conn.close()


@dataclass
class LocalStack:
    """The local stack's configuration and, once started, its components."""

    directory: Path
    days: int = 5
    per_day: int = 40
    edge_port: int = 0  #: 0: a free one
    #: The caller's photos (ZIPEDGE_SOURCE's folder), uploaded instead of demo photos.
    photos: Path | None = None
    #: The days that have photos, once uploaded.
    photo_days: list[date] = field(default_factory=list, init=False)
    end: date = field(default_factory=lambda: datetime.now(UTC).date())
    err: TextIO = sys.stderr
    s3: SeaweedFS | None = None
    redis: RedisServer | None = None
    service: ZipedgeProcess | None = None
    nginx: Nginx | None = None
    edge: Nginx | None = None

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.root = repo_root()
        if not self.edge_port:
            # The service's redirect base must be known before the edge runs, so this
            # port is chosen up front: below the ephemeral range (the offset helper
            # picks there), where no outgoing connection can take it meanwhile.
            self.edge_port = free_ports_with_offset(1, 1)[0]
        elif answers(self.edge_port):  # fail before starting anything
            raise RuntimeError(f"port {self.edge_port} (--edge-port) is already in use")

    @property
    def edge_url(self) -> str:
        return f"http://{HOST}:{self.edge_port}"

    @property
    def start_day(self) -> date:
        return self.end - timedelta(days=self.days - 1)

    def hint(self) -> str:
        start, end = self.start_day, self.end
        if self.photos is not None:
            if not self.photo_days:
                return f"no photos under {self.photos}/YYYY/MM/DD/ to try"
            recent = self.photo_days[-self.days :]
            start, end = recent[0], recent[-1]
        # -L: once the archive is cached, the same link answers with a redirect to it.
        return f"try curl -LOJ '{self.edge_url}/v1/zip?from={start}&to={end}'"

    def specs(self) -> list[ComponentSpec]:
        """Every component, in start order (stopped in reverse)."""
        specs = [
            ComponentSpec("s3", self._create_s3, lambda: _started(self.s3).endpoint_url, self._seed_s3),
            ComponentSpec("redis", self._create_redis, lambda: _started(self.redis).url),
            ComponentSpec("service", self._create_service, lambda: _started(self.service).url),
            ComponentSpec("worker", self._create_worker),
            ComponentSpec("nginx", self._create_nginx, lambda: _started(self.nginx).url),
            ComponentSpec("edge", self._create_edge, lambda: _started(self.edge).url),
        ]
        return specs

    def service_env(self) -> dict[str, str]:
        """The environment of `zipedge serve`/`worker`: the caller's, minus anything that
        would point the service elsewhere (AWS_*, proxies), plus the stack's settings."""
        env = self._storage_env()
        env["ZIPEDGE_REDIS_URL"] = _started(self.redis).url
        return env

    def _storage_env(self) -> dict[str, str]:
        """`service_env` but Redis, known once S3 is up: what the bucket rules are made from."""
        s3 = _started(self.s3)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and not k.lower().endswith("_proxy")
        }
        env.update(
            ZIPEDGE_SOURCE=f"s3://{SOURCE_BUCKET}/{SOURCE_PREFIX}",
            ZIPEDGE_CACHE=f"s3://{CACHE_BUCKET}/{CACHE_PREFIX}",
            ZIPEDGE_PUBLIC_URL=self.edge_url,
            ZIPEDGE_DATA_DIR=str(self.directory / "service" / "var"),
            AWS_ENDPOINT_URL=s3.endpoint_url,
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key,
            AWS_REGION=s3.region,
            PYTHONUNBUFFERED="1",
        )
        return env

    # --- components -----------------------------------------------------------------------

    def _create_s3(self) -> SeaweedFS:
        self.s3 = SeaweedFS(self.directory / "s3", bucket=SOURCE_BUCKET)
        self.s3.stop_timeout_s = S3_STOP_TIMEOUT_S
        return self.s3

    def _seed_s3(self) -> None:
        s3 = _started(self.s3)
        s3.create_bucket(CACHE_BUCKET)
        settings = S3Settings(s3.endpoint_url, s3.region, s3.access_key, s3.secret_key)
        where = f"s3://{SOURCE_BUCKET}/{SOURCE_PREFIX}"
        if self.photos is None:
            from service.demo import EXAMPLE_DAYS, write_demo_photos, write_example_photos

            folder = self.directory / "demo"
            write_demo_photos(folder, days=self.days, per_day=self.per_day, end=self.end)
            write_example_photos(folder, per_day=self.per_day)  # the README's examples work here too
            days = [*_days(*EXAMPLE_DAYS), *_days(self.start_day, self.end)]
            what = "demo photos"
        else:
            folder = self.photos
            days = photo_days(folder)
            what = f"photos from {folder} (ZIPEDGE_SOURCE; no demo photos)"
        uploaded = asyncio.run(
            upload_photos(settings, folder, days, bucket=SOURCE_BUCKET, prefix=SOURCE_PREFIX)
        )
        self.photo_days = list(uploaded.days)
        print(f"zipedge stack: uploaded {uploaded.objects} {what} into {where}", file=self.err)
        lifecycle = asyncio.run(
            configure_lifecycle(
                settings,
                bucket=CACHE_BUCKET,
                prefix=CACHE_PREFIX,
                expire_days=CACHE_EXPIRE_DAYS,
                abort_multipart_days=ABORT_MULTIPART_DAYS,
            )
        )
        # The service's own settings (ZIPEDGE_UPLOAD_GRACE_S, ZIPEDGE_STAGING from the
        # caller's environment too), so the backstop expires what the janitor would.
        served = Settings.from_env(self._storage_env())
        uploads = asyncio.run(
            configure_uploads(
                settings, origins=[self.edge_url], staging=served.staging, grace_s=served.upload_grace_s
            )
        )
        print(f"zipedge stack: lifecycle on s3://{CACHE_BUCKET}: {lifecycle}", file=self.err)
        print(f"zipedge stack: uploads on s3://{served.staging.bucket}: {uploads}", file=self.err)

    def _create_redis(self) -> RedisServer:
        self.redis = RedisServer(self.directory / "redis")
        return self.redis

    def _create_service(self) -> ZipedgeProcess:
        env = self.service_env()
        args = ["serve", "--workers", str(SERVICE_WORKERS)]
        self.service = ZipedgeProcess("service", args, self.directory / "service", env, http=True)
        return self.service

    def _create_worker(self) -> ZipedgeProcess:
        return ZipedgeProcess("worker", ["worker"], self.directory / "worker", self.service_env())

    def _create_nginx(self) -> Nginx:
        service = _started(self.service)
        self.nginx = Nginx(
            "nginx",
            self.root / "nginx" / "nginx.conf.template",
            self.directory / "nginx",
            upstream=f"{HOST}:{service.port}",
        )
        return self.nginx

    def _create_edge(self) -> Nginx:
        s3 = _started(self.s3)
        nginx = _started(self.nginx)
        self.edge = edge_nginx(
            self.root,
            self.directory / "edge",
            port=self.edge_port,
            api_upstream=f"{HOST}:{nginx.port}",
            origin=f"{HOST}:{s3.s3_port}",
            cache_bucket=CACHE_BUCKET,
        )
        return self.edge


def _started(component: _T | None) -> _T:
    if component is None:
        raise RuntimeError("component used before it was started")
    return component


def _days(start: date, end: date) -> Iterator[date]:
    day = start
    while day <= end:
        yield day
        day += timedelta(days=1)


def run(
    directory: Path,
    *,
    days: int = 5,
    per_day: int = 40,
    edge_port: int = 0,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """`zipedge stack`: start the stack, print its URLs, supervise until SIGINT/SIGTERM.
    With ZIPEDGE_SOURCE set to a folder, its photos are uploaded instead of demo photos."""
    photos = source_folder(os.environ)  # a ConfigError before anything starts

    def build() -> LocalStack:
        return LocalStack(directory, days=days, per_day=per_day, edge_port=edge_port, photos=photos, err=err)

    return supervise(build, out=out, err=err)
