"""Soak: mixed traffic for `--soak-seconds` through the reverse proxy, watching for what
grows.

One configuration: Redis, an S3 cache prefix of its own (deleted at the end), `zipedge
serve --workers <--soak-workers>` with the per-client limits raised, one `zipedge worker
--concurrency 2` for the jobs, nginx/ in front (limits raised, see bench/load.py). After
a warm-up, `--soak-clients` loops each do one thing after another, picked at random
(seeded) over the ranges of the `load` dataset (1 to 3 days):

* stream: GET a range not known to be cached, kept and checked member by member (a 302
  means it is cached by now: counted as a redirect);
* redirect: GET a range known to be cached: a 302 to the cache; every fourth one is
  followed and the archive checked;
* head: HEAD a range: a 200 with Content-Length, or a 302;
* range: 64 KiB from a random offset and the last 22 bytes (the end record, `PK\\x05\\x06`)
  of a range's archive: two 206s of exactly those bytes (through the redirect when it is
  cached);
* job: POST /v1/jobs, polled until ready, its download's size checked;
* abandon: GET a range and hang up after 256 KiB.

Every second (more rarely for long soaks: 60 samples at least) the service's processes'
RSS and open file descriptors, the worker's and nginx's, and the service's asyncio tasks
per process (the `zipedge_event_loop_tasks` gauge) are sampled. After the traffic stops,
once idle connections have timed out, the descriptors and tasks are counted again and
compared with the same count taken after the warm-up.

Reported: requests by kind and outcome, errors (goal 0: any unexpected status, a
truncated or invalid archive, a failed job), archives checked, RSS / descriptors / tasks
over time, RSS growth after warm-up (second quarter of the run against the last).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

from bench import curl
from bench.dataset import Content, Dataset
from bench.load import PROXY_LIMITS, SERVICE_LIMITS, front_nginx, objects_of
from bench.s3 import S3Endpoint, delete_prefix, ensure_bucket, s3_client
from bench.stack import ZipedgeServer, ZipedgeWorker, zipedge_env
from bench.stream import BenchError, verify_archive

ACTIONS = {"stream": 30, "redirect": 20, "head": 15, "range": 15, "job": 10, "abandon": 10}
MAX_RANGE_DAYS = 3
ABANDON_AFTER_BYTES = 256 * 1024
RANGE_BYTES = 64 * 1024
RANGE_ATTEMPTS = 3
JOB_TIMEOUT_S = 120.0
#: Idle connections close after this (uvicorn's keep-alive 5 s, plus slack) before the
#: descriptors and tasks are counted.
SETTLE_S = 8.0
MiB = 1024 * 1024
_TASKS = re.compile(r'^zipedge_event_loop_tasks\{pid="(\d+)"\} (\S+)$', re.M)
_ACTIVE = re.compile(r"^zipedge_streams_active (\S+)$", re.M)


@dataclass(slots=True)
class Sample:
    t: float
    service_rss: int
    service_fds: int
    worker_rss: int
    nginx_rss: int
    tasks: int
    streams_active: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 2),
            "service_rss": self.service_rss,
            "service_fds": self.service_fds,
            "worker_rss": self.worker_rss,
            "nginx_rss": self.nginx_rss,
            "tasks": self.tasks,
            "streams_active": self.streams_active,
        }


@dataclass(slots=True)
class SoakResult:
    seconds: float
    workers: int
    clients: int
    counts: Counter[str] = field(default_factory=Counter)  # "action outcome" -> n
    errors: list[str] = field(default_factory=list)
    checked: int = 0
    samples: list[Sample] = field(default_factory=list)
    idle_before: tuple[int, int] = (0, 0)  # (service fds, tasks) after the warm-up, settled
    idle_after: tuple[int, int] = (0, 0)  # the same after the soak
    error: str | None = None

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def quarter(self, q: int) -> list[Sample]:
        n = len(self.samples)
        return self.samples[q * n // 4 : (q + 1) * n // 4]

    @property
    def rss_growth(self) -> tuple[float, float] | None:
        """RSS growth after warm-up: median of the last quarter minus the second's, in
        bytes and as a fraction of the second's."""
        second, last = self.quarter(1), self.quarter(3)
        if not second or not last:
            return None
        before = statistics.median(s.service_rss for s in second)
        after = statistics.median(s.service_rss for s in last)
        return after - before, (after - before) / before

    def as_dict(self) -> dict[str, Any]:
        growth = self.rss_growth
        return {
            "seconds": self.seconds,
            "workers": self.workers,
            "clients": self.clients,
            "requests": self.requests,
            "counts": dict(self.counts),
            "errors": self.errors,
            "checked_archives": self.checked,
            "rss_growth_after_warmup": growth[0] if growth else None,
            "rss_growth_fraction": growth[1] if growth else None,
            "idle_before": {"fds": self.idle_before[0], "tasks": self.idle_before[1]},
            "idle_after": {"fds": self.idle_after[0], "tasks": self.idle_after[1]},
            "samples": [s.as_dict() for s in self.samples],
            "error": self.error,
        }


class Processes:
    """The processes watched: the service's (supervisor and workers), the job worker's,
    nginx's (master and worker)."""

    def __init__(self, service: int, worker: int, nginx: int) -> None:
        self.groups = {
            name: _tree(pid) for name, pid in (("service", service), ("worker", worker), ("nginx", nginx))
        }

    def rss(self, name: str) -> int:
        return sum(_safe(p, lambda p: p.memory_info().rss) for p in self.groups[name])

    def fds(self, name: str) -> int:
        return sum(_safe(p, lambda p: p.num_fds()) for p in self.groups[name])


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _safe(proc: psutil.Process, read: Callable[[psutil.Process], int]) -> int:
    try:
        return int(read(proc))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


class Traffic:
    """The client loops and what they saw."""

    def __init__(
        self,
        base: str,
        ds: Dataset,
        content: Content,
        out_dir: Path,
        res: SoakResult,
        http: httpx.AsyncClient,
        seed: int,
        name: str,
    ) -> None:
        self.name = name
        self.base = base
        self.ds = ds
        self.content = content
        self.out_dir = out_dir
        self.res = res
        self.http = http
        self.rng = random.Random(seed)
        self.cached: set[tuple[str, str]] = set()
        self._files = 0

    def span(self, *, cached: bool | None = None) -> tuple[str, str]:
        if cached and self.cached:
            return self.rng.choice(sorted(self.cached))
        for _ in range(20):
            days = (self.ds.last_day - self.ds.first_day).days
            first = self.ds.first_day + timedelta(days=self.rng.randrange(days + 1))
            last = min(self.ds.last_day, first + timedelta(days=self.rng.randrange(MAX_RANGE_DAYS)))
            span = (first.isoformat(), last.isoformat())
            if cached is None or (span in self.cached) == cached:
                return span
        return span

    def url(self, span: tuple[str, str]) -> str:
        return f"{self.base}/v1/zip?from={span[0]}&to={span[1]}"

    def _path(self) -> Path:
        self._files += 1
        return self.out_dir / f"soak-{self.name}-{self._files}.zip"

    def fail(self, action: str, what: str) -> None:
        self.res.counts[f"{action} error"] += 1
        self.res.errors.append(f"{action}: {what}")

    async def run(self, until: float) -> None:
        kinds, weights = list(ACTIONS), list(ACTIONS.values())
        while time.monotonic() < until:
            action = self.rng.choices(kinds, weights)[0]
            if action == "redirect" and not self.cached:
                action = "stream"
            try:
                outcome = await getattr(self, action)()
            except (BenchError, curl.CurlError, httpx.HTTPError, OSError) as exc:
                self.fail(action, f"{type(exc).__name__}: {exc}")
                continue
            if outcome is not None:
                self.res.counts[f"{action} {outcome}"] += 1

    async def _download(self, url: str, span: tuple[str, str], action: str) -> str | None:
        """GET `url` into a file; a 200 must be the whole, valid archive of `span`."""
        path = self._path()
        try:
            got = await curl.fetch(url, path, max_time_s=120)
            if got.status == 302 and url.startswith(self.base):
                self.cached.add(span)
                return "302"
            if got.status != 200 or got.size != got.content_length:
                self.fail(action, f"{url}: HTTP {got.status}, {got.size} of {got.content_length} B")
                return None
            await asyncio.to_thread(verify_archive, path, objects_of(self.ds, *span), self.content)
            self.res.checked += 1
            return "200"
        finally:
            path.unlink(missing_ok=True)

    async def stream(self) -> str | None:
        span = self.span(cached=False)
        return await self._download(self.url(span), span, "stream")

    async def redirect(self) -> str | None:
        span = self.span(cached=True)
        got = await curl.fetch(self.url(span), max_time_s=30)
        if got.status != 302 or not got.location:
            self.fail("redirect", f"{span}: HTTP {got.status}, expected a 302 to the cache")
            return None
        if self.rng.random() < 0.25:
            return "302 followed" if await self._download(got.location, span, "redirect") else None
        return "302"

    async def head(self) -> str | None:
        span = self.span()
        got = await curl.fetch(self.url(span), method="HEAD", max_time_s=60)
        if got.status == 302:
            self.cached.add(span)
            return "302"
        if got.status != 200 or not got.content_length:
            self.fail("head", f"{span}: HTTP {got.status}, Content-Length {got.content_length}")
            return None
        return "200"

    async def _ranged(self, url: str, want: str, archive: str | None) -> tuple[httpx.Response, str]:
        """GET `want` of `url` (with `If-Range: archive` when given), through the redirect
        when it is cached: (the answer, the archive's ETag the service named)."""
        headers = {"Range": want, **({"If-Range": archive} if archive else {})}
        got = await self.http.get(url, headers=headers)
        etag = got.headers.get("etag", "")
        if got.status_code == 302:
            # The cache object, under its storage's own validators: the service's ETag
            # (the archive id) says which archive it is.
            got = await self.http.get(got.headers["location"], headers={"Range": want})
        return got, etag

    async def range(self) -> str | None:
        """Like a client resuming a download: the first byte says the archive (its ETag)
        and size, then two ranges of that very archive (`If-Range`). An archive may change
        in between (more CRCs known, or its cache built from a later layout): the service
        then sends the whole new one (200) or redirects to another archive; that starts
        over, up to RANGE_ATTEMPTS times."""
        span = self.span()
        for _ in range(RANGE_ATTEMPTS):
            outcome = await self._range_once(span)
            if outcome != "changed":
                return outcome
        self.fail("range", f"{span}: the archive changed between the ranges {RANGE_ATTEMPTS} times")
        return None

    async def _range_once(self, span: tuple[str, str]) -> str | None:
        url = self.url(span)
        probe, archive = await self._ranged(url, "bytes=0-0", None)
        total = probe.headers.get("content-range", "").rpartition("/")[2]
        if probe.status_code != 206 or not total.isdigit() or not archive:
            got = probe.headers.get("content-range")
            self.fail("range", f"{span}: bytes=0-0 answered {probe.status_code}, {got}, ETag {archive!r}")
            return None
        size = int(total)
        start = self.rng.randrange(max(1, size - RANGE_BYTES))
        end = min(size, start + RANGE_BYTES) - 1
        via = False
        for want, first, last in ((f"bytes={start}-{end}", start, end), ("bytes=-22", size - 22, size - 1)):
            got, etag = await self._ranged(url, want, archive)
            via = via or got.url != httpx.URL(url)
            if etag != archive or got.status_code == 200:
                self.res.counts["range restarted"] += 1  # not an outcome: one more try
                return "changed"
            expected = f"bytes {first}-{last}/{size}"
            if got.status_code != 206 or got.headers.get("content-range") != expected:
                self.fail(
                    "range",
                    f"{span} {want} of {archive}: HTTP {got.status_code}, "
                    f"{got.headers.get('content-range')} (expected {expected})",
                )
                return None
            if len(got.content) != last - first + 1:
                self.fail("range", f"{span} {want}: {len(got.content)} B")
                return None
            if want == "bytes=-22" and not got.content.startswith(b"PK\x05\x06"):
                self.fail("range", f"{span}: the last 22 bytes are not the end record")
                return None
        if via:
            self.cached.add(span)
        return "206 via 302" if via else "206"

    async def job(self) -> str | None:
        span = self.span()
        posted = await self.http.post(f"{self.base}/v1/jobs", json={"from": span[0], "to": span[1]})
        if posted.status_code not in (200, 202):
            self.fail("job", f"{span}: POST answered {posted.status_code}: {posted.text[:200]}")
            return None
        doc: dict[str, Any] = posted.json()
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while doc["status"] not in ("ready", "failed", "cancelled"):
            if time.monotonic() > deadline:
                self.fail("job", f"{span}: not ready after {JOB_TIMEOUT_S:.0f} s")
                return None
            await asyncio.sleep(0.25)
            doc = (await self.http.get(f"{self.base}/v1/jobs/{doc['id']}")).json()
        if doc["status"] != "ready":
            self.fail("job", f"{span}: {doc['status']}: {doc.get('error')}")
            return None
        self.cached.add(span)
        # The cache object may hold the layout it was first built in (by a stream, before
        # the CRCs were learned): its download, not `bytes_total`, says the size.
        return "ready" if await self._download(doc["download_url"], span, "job") else None

    async def abandon(self) -> str | None:
        span = self.span(cached=False)
        async with self.http.stream("GET", self.url(span)) as resp:
            if resp.status_code == 302:
                self.cached.add(span)
                return "302"
            if resp.status_code != 200:
                self.fail("abandon", f"{span}: HTTP {resp.status_code}")
                return None
            read = 0
            async for chunk in resp.aiter_raw():
                read += len(chunk)
                if read >= ABANDON_AFTER_BYTES:
                    break
        return "left"


async def _watch(
    procs: Processes, metrics_url: str, res: SoakResult, interval: float, stop: asyncio.Event
) -> None:
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=5.0) as http:
        while not stop.is_set():
            tasks, active = await _tasks(http, metrics_url)
            res.samples.append(
                Sample(
                    t=time.monotonic() - t0,
                    service_rss=procs.rss("service"),
                    service_fds=procs.fds("service"),
                    worker_rss=procs.rss("worker"),
                    nginx_rss=procs.rss("nginx"),
                    tasks=tasks,
                    streams_active=active,
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


async def _tasks(http: httpx.AsyncClient, metrics_url: str) -> tuple[int, float]:
    """asyncio tasks of every service process (the gauge, per pid) and streams in progress."""
    text = (await http.get(metrics_url)).text
    tasks = sum(int(float(v)) for _, v in _TASKS.findall(text))
    active = _ACTIVE.search(text)
    return tasks, float(active.group(1)) if active else 0.0


async def _settled(procs: Processes, metrics_url: str) -> tuple[int, int]:
    await asyncio.sleep(SETTLE_S)
    async with httpx.AsyncClient(timeout=5.0) as http:
        tasks, _ = await _tasks(http, metrics_url)
    return procs.fds("service"), tasks


async def measure(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    *,
    seconds: float,
    workers: int,
    clients: int,
    seed: int,
    logs: Path,
    tmp: Path,
    archives: Path,
    log: Callable[[str], None],
) -> SoakResult:
    from bench.jobs import _wait_workers
    from service.stack.redis import RedisServer

    res = SoakResult(seconds, workers, clients)
    cache_bucket = f"{ep.bucket}-cache"
    prefix = f"soak-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    source = f"s3://{ep.bucket}/{ds.prefix}"
    try:
        async with s3_client(ep, pool=4) as s3:
            await ensure_bucket(s3, cache_bucket)
        with RedisServer(tmp / "redis-soak") as redis:
            service_env = {
                **env,
                **SERVICE_LIMITS,
                "ZIPEDGE_MAX_JOBS_PER_CLIENT": "10000",
                "ZIPEDGE_CACHE": f"s3://{cache_bucket}/{prefix}",
                "ZIPEDGE_REDIS_URL": redis.url,
            }
            async with (
                ZipedgeServer(ep, source, logs / "zipedge-soak.log", service_env, workers=workers) as srv,
                ZipedgeWorker(zipedge_env(ep, source, service_env), logs / "worker-soak.log", 2) as worker,
            ):
                await _wait_workers(redis.url, [worker])
                with front_nginx(tmp / "nginx-soak", srv.port) as nginx:
                    await _soak(res, srv, worker, nginx, ds, content, archives, seed, log)
    except Exception as exc:  # recorded; the run goes on with the other parts
        res.error = f"{type(exc).__name__}: {exc}"
        log(f"soak FAILED:\n{traceback.format_exc()}")
    finally:
        async with s3_client(ep, pool=4) as s3:
            await delete_prefix(s3, cache_bucket, f"{prefix}/")
    return res


async def _soak(
    res: SoakResult,
    srv: ZipedgeServer,
    worker: ZipedgeWorker,
    nginx: Any,
    ds: Dataset,
    content: Content,
    archives: Path,
    seed: int,
    log: Callable[[str], None],
) -> None:
    warm = f"{nginx.url}/v1/zip?{ds.warmup_query}"
    if any(p.status != 200 for p in await asyncio.gather(*(curl.fetch(warm) for _ in range(8)))):
        raise BenchError("the soak's warm-up streams did not all answer 200")
    procs = Processes(srv.pid, worker.pid, nginx.pid)
    metrics_url = f"{srv.base_url}/metrics"
    res.idle_before = await _settled(procs, metrics_url)
    log(
        f"soak: {res.seconds:.0f} s, {res.clients} clients, {res.workers} service process(es); "
        f"idle (descriptors, tasks) {res.idle_before}"
    )
    stop = asyncio.Event()
    interval = max(1.0, res.seconds / 60)
    watcher = asyncio.create_task(_watch(procs, metrics_url, res, interval, stop))
    limits = httpx.Limits(max_connections=4 * res.clients)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0), limits=limits) as http:
        until = time.monotonic() + res.seconds
        loops = [
            Traffic(nginx.url, ds, content, archives, res, http, seed + i, f"client{i}")
            for i in range(res.clients)
        ]
        shared: set[tuple[str, str]] = set()
        for loop in loops:
            loop.cached = shared  # what one client learns is cached, the others may redirect to
        await asyncio.gather(*(loop.run(until) for loop in loops))
    stop.set()
    await watcher
    res.idle_after = await _settled(procs, metrics_url)
    log(f"soak: {res.requests} requests, {len(res.errors)} errors, {res.checked} archives checked")


def checks(res: SoakResult) -> list[Any]:
    from bench.report import Check

    out = [Check("soak errors == 0", f"{res.requests} requests", str(len(res.errors)), "0", not res.errors)]
    growth = res.rss_growth
    if growth is not None:
        measured = f"{growth[0] / MiB:+.1f} MiB ({growth[1]:+.1%}), second quarter -> last quarter"
        out.append(Check("service RSS flat after warm-up", "", measured, "<= +10%", growth[1] <= 0.10))
    (fds0, tasks0), (fds1, tasks1) = res.idle_before, res.idle_after
    out.append(
        Check(
            "asyncio tasks back to idle after the soak",
            f"{res.workers} service process(es)",
            f"{tasks0} -> {tasks1}",
            "no more than before",
            tasks1 <= tasks0,
        )
    )
    out.append(Check("open descriptors, idle before -> after", "service", f"{fds0} -> {fds1}", "", None))
    return out


def render(res: SoakResult, all_checks: list[Any]) -> str:
    from bench.report import _table, _targets

    out = [
        f"Soak: {res.seconds:.0f} s of mixed traffic, {res.clients} clients, through nginx/ (limits raised "
        f"as for the load) to {res.workers} service process(es) with Redis and an S3 cache, one job worker"
    ]
    by_action: dict[str, list[tuple[str, int]]] = {}
    for key, n in sorted(res.counts.items()):
        action, _, outcome = key.partition(" ")
        by_action.setdefault(action, []).append((outcome, n))
    rows = [
        [action, str(sum(n for _, n in outcomes)), ", ".join(f"{o} {n}" for o, n in outcomes)]
        for action, outcomes in by_action.items()
    ]
    if rows:
        out.append(_table(["request", "count", "outcomes"], rows, left=3))
    out.append(f"  archives received whole and checked member by member: {res.checked}")
    if res.samples:
        marks = sorted({round(i * (len(res.samples) - 1) / 10) for i in range(11)})
        series = [
            [
                f"{s.t:.0f}",
                f"{s.service_rss / MiB:.0f}",
                str(s.service_fds),
                str(s.tasks),
                f"{s.streams_active:.0f}",
                f"{s.worker_rss / MiB:.0f}",
                f"{s.nginx_rss / MiB:.0f}",
            ]
            for s in (res.samples[i] for i in marks)
        ]
        header = ["t s", "service RSS MiB", "fds", "tasks", "streams", "job worker RSS MiB", "nginx RSS MiB"]
        out += ["", _table(header, series, left=0)]
    out += [f"  ERROR {e}" for e in res.errors[:20]]
    if res.error:
        out.append(f"  ERROR {res.error}")
    out += _targets(all_checks)
    return "\n".join(out)


__all__ = ["PROXY_LIMITS", "SoakResult", "checks", "measure", "render"]
