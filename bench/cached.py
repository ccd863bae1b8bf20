"""Redirects and the edge: what a cached range costs once it is built.

Setup: Redis, a cache bucket, the service with `ZIPEDGE_CACHE`, `ZIPEDGE_REDIS_URL` and
`ZIPEDGE_PUBLIC_URL=<edge>`. The range is requested once (a 200 stream, teed into the
cache; the copy is checked member by member), then `HEAD` is polled until it answers 302
(the cache object is committed), and one `GET` must answer 302 to the edge.

* redirects: `wrk` on `/v1/zip?from=…&to=…` (every answer a 302; wrk does not follow
  redirects), against a trivial Starlette app returning the same 302 under the same
  uvicorn settings (bench/trivial_app.py), in the same run. The service's own request
  counter (/metrics) before and after proves every request was a 302.
* edge: the edge nginx (edge/nginx.conf.template) in front of SeaweedFS; the 302's
  Location is fetched once (MISS: the edge fills its slices, and that copy must be the
  streamed archive byte for byte), once more (HIT), then `wrk` on it through the edge,
  against nginx serving the same bytes as a static file with sendfile. The edge's access
  log proves every measured request was a HIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import curl, wrk
from bench.dataset import Content, Dataset
from bench.s3 import S3Endpoint, delete_prefix, ensure_bucket, s3_client
from bench.stack import ROOT, TrivialRedirectServer, ZipedgeServer
from bench.stream import BenchError, ProcessTree, StreamRun, curl_stream_once, file_crc32, verify_archive

STATIC_TEMPLATE = Path(__file__).with_name("static.nginx.conf.template")
#: From the end of the first stream until the cache object must be committed.
COMMIT_TIMEOUT_S = 60.0
COMMIT_POLL_S = 0.1

_METRIC = re.compile(r"^zipedge_requests_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_CACHE_STATUS = re.compile(r" cache=(\S+)")


@dataclass(frozen=True, slots=True)
class WrkSettings:
    threads: int = 2
    connections: int = 32
    duration_s: float = 10.0

    @property
    def single_duration_s(self) -> float:
        # The one-connection latency run: thousands of requests in half the time suffice.
        return max(2.0, self.duration_s / 2)


def cpu_ms_per_request(cpu_s: float, *runs: wrk.WrkResult | None) -> float | None:
    requests = sum(r.requests for r in runs if r is not None)
    return cpu_s / requests * 1e3 if requests else None


@dataclass(slots=True)
class RedirectResult:
    describe: str
    objects: int
    archive_bytes: int = 0
    build: StreamRun | None = None  # the first GET: a 200 stream, teed into the cache
    commit_wait_s: float = 0.0  # end of that stream -> HEAD answers 302
    location: str = ""
    zipedge: wrk.WrkResult | None = None  # `connections` connections: the figure
    trivial: wrk.WrkResult | None = None
    zipedge_single: wrk.WrkResult | None = None  # one connection: latency without queueing
    trivial_single: wrk.WrkResult | None = None
    zipedge_cpu_s: float = 0.0  # the service process during both its wrk runs
    trivial_cpu_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)  # /v1/zip answers during the run
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.zipedge is None or self.trivial is None:
            return None
        return self.zipedge.rps / self.trivial.rps

    @property
    def zipedge_cpu_ms(self) -> float | None:
        """The service's CPU per redirect, over both its runs."""
        return cpu_ms_per_request(self.zipedge_cpu_s, self.zipedge, self.zipedge_single)

    @property
    def trivial_cpu_ms(self) -> float | None:
        return cpu_ms_per_request(self.trivial_cpu_s, self.trivial, self.trivial_single)

    def as_dict(self) -> dict[str, Any]:
        return {
            "describe": self.describe,
            "objects": self.objects,
            "archive_bytes": self.archive_bytes,
            "build_stream": self.build.as_dict() if self.build else None,
            "commit_wait_s": self.commit_wait_s,
            "location": self.location,
            "location_bytes": len(self.location),
            "zipedge": self.zipedge.as_dict() if self.zipedge else None,
            "trivial": self.trivial.as_dict() if self.trivial else None,
            "zipedge_one_connection": self.zipedge_single.as_dict() if self.zipedge_single else None,
            "trivial_one_connection": self.trivial_single.as_dict() if self.trivial_single else None,
            "zipedge_cpu_s": self.zipedge_cpu_s,
            "trivial_cpu_s": self.trivial_cpu_s,
            "zipedge_cpu_ms_per_request": self.zipedge_cpu_ms,
            "trivial_cpu_ms_per_request": self.trivial_cpu_ms,
            "statuses_during_run": self.statuses,
            "ratio_rps": self.ratio,
            "error": self.error,
        }


@dataclass(slots=True)
class EdgeResult:
    archive_bytes: int = 0
    edge: wrk.WrkResult | None = None
    static: wrk.WrkResult | None = None
    edge_cpu_s: float = 0.0  # nginx master + worker during the run
    static_cpu_s: float = 0.0
    cache_statuses: dict[str, int] = field(default_factory=dict)  # edge access log during the run
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        """Edge MB/s over static MB/s (bytes read, partial responses included: with ~30 MB
        responses and 32 connections, counting complete responses alone is coarse)."""
        if self.edge is None or self.static is None:
            return None
        return self.edge.mb_per_s / self.static.mb_per_s

    @property
    def ratio_rps(self) -> float | None:
        if self.edge is None or self.static is None:
            return None
        return self.edge.rps / self.static.rps

    def as_dict(self) -> dict[str, Any]:
        return {
            "archive_bytes": self.archive_bytes,
            "edge": self.edge.as_dict() if self.edge else None,
            "static": self.static.as_dict() if self.static else None,
            "edge_cpu_s": self.edge_cpu_s,
            "static_cpu_s": self.static_cpu_s,
            "cache_statuses_during_run": self.cache_statuses,
            "ratio_mb_per_s": self.ratio,
            "ratio_rps": self.ratio_rps,
            "error": self.error,
        }


async def zip_statuses(client: httpx.AsyncClient, base_url: str) -> Counter[str]:
    """`/v1/zip` GETs answered so far, by status, from the service's /metrics."""
    resp = await client.get(f"{base_url}/metrics")
    resp.raise_for_status()
    return parse_zip_statuses(resp.text)


def parse_zip_statuses(text: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for labels, value in _METRIC.findall(text):
        lab = dict(_LABEL.findall(labels))
        if lab.get("route") == "zip_range" and lab.get("method") == "GET":
            out[lab.get("status", "?")] += int(float(value))
    return out


def cache_statuses(log: Path, offset: int) -> Counter[str]:
    """`cache=` values of the edge's access-log lines written after `offset`."""
    with log.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return Counter(m.group(1) for m in _CACHE_STATUS.finditer(text))


async def _wait_committed(url: str) -> float:
    """Poll HEAD until the service redirects (the tee committed the cache object)."""
    t0 = time.monotonic()
    while True:
        head = await curl.fetch(url, method="HEAD", max_time_s=30)
        if head.status == 302:
            return time.monotonic() - t0
        if head.status != 200:
            raise BenchError(f"HEAD {url}: HTTP {head.status} while waiting for the cache object")
        if time.monotonic() - t0 > COMMIT_TIMEOUT_S:
            raise BenchError(f"HEAD {url}: still 200 after {COMMIT_TIMEOUT_S:.0f} s: the tee never committed")
        await asyncio.sleep(COMMIT_POLL_S)


@dataclass(slots=True)
class _Built:
    server: ZipedgeServer
    url: str
    location: str
    archive: Path
    crc32: int


async def _build(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    stack: contextlib.AsyncExitStack,
    res: RedirectResult,
    edge_url: str,
    cache_bucket: str,
    logs: Path,
    tmp: Path,
    archives: Path,
) -> _Built:
    from service.stack.redis import RedisServer

    prefix = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    async with s3_client(ep, pool=4) as s3:
        await ensure_bucket(s3, cache_bucket)

    async def cleanup() -> None:
        # A run's cache objects are garbage once it ends (and would pile up in a --data-dir).
        async with s3_client(ep, pool=4) as s3:
            await delete_prefix(s3, cache_bucket, f"{prefix}/")

    stack.push_async_callback(cleanup)
    redis = stack.enter_context(RedisServer(tmp / "redis-cached"))
    service_env = {
        **env,
        "ZIPEDGE_CACHE": f"s3://{cache_bucket}/{prefix}",
        "ZIPEDGE_REDIS_URL": redis.url,
        "ZIPEDGE_PUBLIC_URL": edge_url,
    }
    server = await stack.enter_async_context(
        ZipedgeServer(ep, f"s3://{ep.bucket}/{ds.prefix}", logs / "zipedge-cached.log", service_env)
    )
    url = f"{server.base_url}/v1/zip?{ds.query}"
    archive = archives / "cached.zip"
    res.build = await curl_stream_once(url, server.pid, archive)
    res.archive_bytes = res.build.received
    res.build.members = await asyncio.to_thread(verify_archive, archive, ds.objects, content)
    crc = await asyncio.to_thread(file_crc32, archive)
    res.build.crc32 = crc
    res.commit_wait_s = await _wait_committed(url)
    redirect = await curl.fetch(url)
    if redirect.status != 302 or not redirect.location.startswith(f"{edge_url}/{cache_bucket}/"):
        raise BenchError(
            f"GET {url}: HTTP {redirect.status} to {redirect.location!r}, expected 302 to the edge"
        )
    if redirect.etag != res.build.etag:
        raise BenchError(f"GET {url}: the 302's ETag {redirect.etag} is not the stream's {res.build.etag}")
    res.location = redirect.location
    return _Built(server, url, redirect.location, archive, crc)


async def _load(url: str, settings: WrkSettings, log: Path) -> tuple[wrk.WrkResult, wrk.WrkResult]:
    """The loaded run (the figure), then one connection: the latency of a lone request."""
    loaded = await wrk.run(
        url,
        threads=settings.threads,
        connections=settings.connections,
        duration_s=settings.duration_s,
        log=log,
    )
    single = await wrk.run(url, threads=1, connections=1, duration_s=settings.single_duration_s, log=log)
    return loaded, single


async def _redirects(built: _Built, res: RedirectResult, settings: WrkSettings, logs: Path) -> None:
    log = logs / "wrk.log"
    async with httpx.AsyncClient(timeout=10.0) as client:
        before = await zip_statuses(client, built.server.base_url)
        tree = ProcessTree(built.server.pid)
        cpu0 = tree.cpu_s()
        res.zipedge, res.zipedge_single = await _load(built.url, settings, log)
        res.zipedge_cpu_s = tree.cpu_s() - cpu0  # both runs
        after = await zip_statuses(client, built.server.base_url)
    after.subtract(before)
    res.statuses = {k: v for k, v in after.items() if v}
    # Every answer a redirect (wrk would count a 200 stream as a success too).
    sent = res.zipedge.requests + res.zipedge_single.requests
    if set(res.statuses) != {"302"} or res.statuses["302"] < sent:
        raise BenchError(f"/v1/zip answered {res.statuses} during wrk's {sent} requests")

    async with TrivialRedirectServer(built.location, logs / "trivial-app.log") as trivial:
        url = f"{trivial.base_url}/v1/zip?{built.url.partition('?')[2]}"
        probe = await curl.fetch(url)
        if probe.status != 302 or probe.location != built.location:
            raise BenchError(f"trivial app: HTTP {probe.status} to {probe.location!r}")
        tree = ProcessTree(trivial.pid)
        cpu0 = tree.cpu_s()
        res.trivial, res.trivial_single = await _load(url, settings, log)
        res.trivial_cpu_s = tree.cpu_s() - cpu0


async def _edge(
    built: _Built,
    ep: S3Endpoint,
    edge_port: int,
    cache_bucket: str,
    res: EdgeResult,
    settings: WrkSettings,
    logs: Path,
    tmp: Path,
    stack: contextlib.ExitStack,
) -> None:
    from service.stack.local import edge_nginx
    from service.stack.nginx import Nginx

    edge = stack.enter_context(
        edge_nginx(
            ROOT,
            tmp / "edge",
            port=edge_port,
            api_upstream=f"127.0.0.1:{built.server.port}",
            origin=f"{ep.host}:{ep.port}",
            cache_bucket=cache_bucket,
        )
    )
    static_root = tmp / "static-root"
    static_root.mkdir(parents=True, exist_ok=True)
    static_file = static_root / "archive.zip"
    size = built.archive.stat().st_size
    res.archive_bytes = size
    # The fill (MISS) is kept as the static file: the reference serves the very bytes the
    # edge caches, and they must be the archive that was streamed and checked.
    miss = await curl.fetch(built.location, static_file)
    if (miss.status, miss.size, miss.cache_status) != (200, size, "MISS"):
        raise BenchError(f"edge fill: HTTP {miss.status}, {miss.size} B, X-Cache-Status {miss.cache_status}")
    if await asyncio.to_thread(file_crc32, static_file) != built.crc32:
        raise BenchError("the edge's copy of the cache object differs from the streamed archive")
    hit = await curl.fetch(built.location)
    if (hit.status, hit.size, hit.cache_status) != (200, size, "HIT"):
        raise BenchError(
            f"edge: HTTP {hit.status}, {hit.size} B, X-Cache-Status {hit.cache_status}; want HIT"
        )
    static = stack.enter_context(Nginx("static", STATIC_TEMPLATE, tmp / "static", root=str(static_root)))
    static_url = f"{static.url}/archive.zip"
    probe = await curl.fetch(static_url)
    if (probe.status, probe.size) != (200, size):
        raise BenchError(f"static nginx: HTTP {probe.status}, {probe.size} B")

    log = logs / "wrk.log"
    offset = edge.access_log_path.stat().st_size
    assert edge.pid is not None and static.pid is not None
    tree = ProcessTree(edge.pid)
    cpu0 = tree.cpu_s()
    res.edge = await wrk.run(
        built.location,
        threads=settings.threads,
        connections=settings.connections,
        duration_s=settings.duration_s,
        log=log,
    )
    res.edge_cpu_s = tree.cpu_s() - cpu0
    await asyncio.sleep(0.2)  # nginx logs a request when it ends; let the last ones land
    res.cache_statuses = dict(cache_statuses(edge.access_log_path, offset))
    if set(res.cache_statuses) != {"HIT"} or res.cache_statuses["HIT"] < res.edge.requests:
        raise BenchError(f"edge answered {res.cache_statuses} during wrk's {res.edge.requests} requests")
    tree = ProcessTree(static.pid)
    cpu0 = tree.cpu_s()
    res.static = await wrk.run(
        static_url,
        threads=settings.threads,
        connections=settings.connections,
        duration_s=settings.duration_s,
        log=log,
    )
    res.static_cpu_s = tree.cpu_s() - cpu0


async def measure(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    settings: WrkSettings,
    *,
    redirects: bool,
    edge: bool,
    logs: Path,
    tmp: Path,
    archives: Path,
    log: Callable[[str], None],
) -> tuple[RedirectResult | None, EdgeResult | None]:
    """Build the cache object of `ds`'s range, then measure the parts asked for. Errors are
    recorded in the results (the run goes on with the other parts)."""
    from service.stack.ports import free_ports_with_offset

    red = RedirectResult(ds.describe(), ds.count)
    edg = EdgeResult()
    cache_bucket = f"{ep.bucket}-cache"
    # The service's redirect base must be known before the edge runs: a port below the
    # ephemeral range, as `zipedge stack` does, so no outgoing connection takes it meanwhile.
    edge_port = free_ports_with_offset(1, 1)[0]
    edge_url = f"http://127.0.0.1:{edge_port}"
    stage = "setup"
    try:
        async with contextlib.AsyncExitStack() as stack:
            sync_stack = stack.enter_context(contextlib.ExitStack())
            built = await _build(
                ep, ds, content, env, stack, red, edge_url, cache_bucket, logs, tmp, archives
            )
            stack.callback(built.archive.unlink, missing_ok=True)
            if redirects:
                stage = "redirects"
                await _redirects(built, red, settings, logs)
            if edge:
                stage = "edge"
                await _edge(built, ep, edge_port, cache_bucket, edg, settings, logs, tmp, sync_stack)
    except Exception as exc:  # recorded; the run goes on with the other parts
        message = f"{type(exc).__name__}: {exc}"
        if stage in ("setup", "redirects"):
            red.error = message
        if stage in ("setup", "edge"):
            edg.error = message
        log(f"{stage} FAILED:\n{traceback.format_exc()}")
    return (red if redirects else None), (edg if edge else None)
