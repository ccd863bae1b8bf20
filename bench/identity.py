"""What identity costs: redirects and a cold stream with authentication and rate limiting
on, against the same service with them off, in the same run.

For each mode a service with Redis (the limiter's storage, as in production):

* off: no authentication, no rate limits (the embedded default);
* on: HS256 bearer tokens (`ZIPEDGE_AUTH_JWT_SECRET`) and a `download` rate limit far above
  what the run sends, so every request verifies a token and hits the Redis-backed limiter
  (one moving-window script) without ever being refused; each stream also takes and gives
  back a live-stream slot in Redis.

Redirects: both services run side by side; each builds the cached range once (a teed 200
stream) and is polled with HEAD until 302; then `wrk` with the mode's header on `/v1/zip`
(every answer a 302, checked on /metrics), off and on alternately, `ROUNDS` times each:
the best run of each mode is the figure (other load on a shared machine only ever slows a
run down), and the service's CPU per request over all its runs is shown beside it. Cold
streams: the small dataset from two services without a cache, side by side, a warm-up each
and then `reps` streams each, alternately; the median of each mode. The goal: redirects
with identity on at least 0.8 × off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

from bench import curl, wrk
from bench.cached import WrkSettings, zip_statuses
from bench.dataset import Dataset
from bench.s3 import S3Endpoint, delete_prefix, ensure_bucket, s3_client
from bench.stack import ZipedgeServer
from bench.stream import BenchError, ProcessTree, curl_stream_once

SECRET = "zipedge-bench-secret-of-at-least-32-bytes"
#: Far above any run's request count: every request is counted, none refused.
NEVER_REACHED = "download=1000000000/hour"
MODES = ("off", "on")
#: wrk runs per mode, alternating.
ROUNDS = 2
REDIRECT_GOAL = 0.8
COMMIT_TIMEOUT_S = 60.0


def mode_env(mode: str) -> dict[str, str]:
    if mode == "off":
        return {}
    return {"ZIPEDGE_AUTH_JWT_SECRET": SECRET, "ZIPEDGE_RATE_LIMITS": NEVER_REACHED}


def mode_headers(mode: str) -> dict[str, str]:
    if mode == "off":
        return {}
    claims = {"sub": "bench", "scope": "download admin", "exp": int(time.time()) + 3 * 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


@dataclass(slots=True)
class IdentityResult:
    redirects: dict[str, wrk.WrkResult] = field(default_factory=dict)  #: the best run
    cpu_ms_per_redirect: dict[str, float] = field(default_factory=dict)
    stream_s: dict[str, float] = field(default_factory=dict)
    stream_ttfb_s: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def ratio(self, figures: dict[str, float]) -> float | None:
        return figures["on"] / figures["off"] if {"on", "off"} <= set(figures) and figures["off"] else None

    @property
    def redirect_ratio(self) -> float | None:
        return self.ratio({mode: run.rps for mode, run in self.redirects.items()})

    @property
    def stream_ratio(self) -> float | None:
        """Stream time on / off (above 1: slower with identity)."""
        return self.ratio(self.stream_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "redirects": {mode: run.as_dict() for mode, run in self.redirects.items()},
            "redirect_ratio_on_over_off": self.redirect_ratio,
            "cpu_ms_per_redirect": self.cpu_ms_per_redirect,
            "cold_stream_s": self.stream_s,
            "cold_stream_ttfb_s": self.stream_ttfb_s,
            "cold_stream_ratio_on_over_off": self.stream_ratio,
            "error": self.error,
        }


async def _wait_redirect(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while (head := await curl.fetch(url, method="HEAD", headers=headers, max_time_s=30)).status != 302:
        if head.status != 200 or time.monotonic() > deadline:
            raise BenchError(f"HEAD {url}: HTTP {head.status} while waiting for the cache object")
        await asyncio.sleep(0.1)


async def _start_cached(
    ep: S3Endpoint, ds: Dataset, env: dict[str, str], mode: str, logs: Path, stack: contextlib.AsyncExitStack
) -> tuple[ZipedgeServer, str]:
    """A service for `mode` whose cache holds `ds`'s range: (server, its /v1/zip URL)."""
    headers = mode_headers(mode)
    log_path = logs / f"zipedge-identity-{mode}-redirects.log"
    server = await stack.enter_async_context(
        ZipedgeServer(ep, f"s3://{ep.bucket}/{ds.prefix}", log_path, env)
    )
    url = f"{server.base_url}/v1/zip?{ds.query}"
    first = await curl.fetch(url, headers=headers)
    if first.status != 200:
        raise BenchError(f"GET {url} ({mode}): HTTP {first.status}, expected the 200 stream")
    await _wait_redirect(url, headers)
    return server, url


async def _redirects(
    servers: dict[str, tuple[ZipedgeServer, str]], res: IdentityResult, settings: WrkSettings, logs: Path
) -> None:
    runs: dict[str, list[wrk.WrkResult]] = {mode: [] for mode in servers}
    cpu: dict[str, float] = dict.fromkeys(servers, 0.0)
    before: dict[str, Counter[str]] = {}
    for mode, (server, _) in servers.items():
        async with httpx.AsyncClient(timeout=10.0, headers=mode_headers(mode)) as client:
            before[mode] = await zip_statuses(client, server.base_url)
    for _ in range(ROUNDS):
        for mode, (server, url) in servers.items():
            tree = ProcessTree(server.pid)
            cpu0 = tree.cpu_s()
            runs[mode].append(
                await wrk.run(
                    url,
                    threads=settings.threads,
                    connections=settings.connections,
                    duration_s=settings.duration_s,
                    log=logs / "wrk.log",
                    headers=mode_headers(mode),
                )
            )
            cpu[mode] += tree.cpu_s() - cpu0
    for mode, (server, _) in servers.items():
        async with httpx.AsyncClient(timeout=10.0, headers=mode_headers(mode)) as client:
            after = await zip_statuses(client, server.base_url)
        after.subtract(before[mode])
        statuses = {k: v for k, v in after.items() if v}
        sent = sum(run.requests for run in runs[mode])
        if set(statuses) != {"302"} or statuses["302"] < sent:
            raise BenchError(f"/v1/zip ({mode}) answered {statuses} during wrk's {sent} requests")
        res.redirects[mode] = max(runs[mode], key=lambda run: run.rps)
        res.cpu_ms_per_redirect[mode] = cpu[mode] * 1000 / sent


async def _cold_streams(
    ep: S3Endpoint,
    ds: Dataset,
    service_env: dict[str, dict[str, str]],
    res: IdentityResult,
    reps: int,
    logs: Path,
) -> None:
    """Both services without a cache side by side; a warm-up each, then their streams
    alternately, the median of each mode."""
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in service_env}
    async with contextlib.AsyncExitStack() as stack:
        urls: dict[str, tuple[str, int]] = {}
        for mode, env in service_env.items():
            log_path = logs / f"zipedge-identity-{mode}-stream.log"
            server = await stack.enter_async_context(
                ZipedgeServer(ep, f"s3://{ep.bucket}/{ds.prefix}", log_path, {**env, "ZIPEDGE_CACHE": ""})
            )
            urls[mode] = (f"{server.base_url}/v1/zip?{ds.query}", server.pid)
            await curl_stream_once(urls[mode][0], server.pid, headers=mode_headers(mode))  # warm-up
        for _ in range(reps):
            for mode, (url, pid) in urls.items():
                run = await curl_stream_once(url, pid, headers=mode_headers(mode))
                runs[mode].append((run.total_s, run.ttfb_s))
    for mode, timed in runs.items():
        res.stream_s[mode] = statistics.median(t for t, _ in timed)
        res.stream_ttfb_s[mode] = statistics.median(t for _, t in timed)


async def measure(
    ep: S3Endpoint,
    cached_ds: Dataset,
    stream_ds: Dataset,
    env: dict[str, str],
    settings: WrkSettings,
    *,
    reps: int,
    logs: Path,
    tmp: Path,
    log: Callable[[str], None],
) -> IdentityResult:
    from service.stack.redis import RedisServer

    res = IdentityResult()
    cache_bucket = f"{ep.bucket}-cache"
    prefix = f"bench-identity-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        async with contextlib.AsyncExitStack() as stack:
            async with s3_client(ep, pool=4) as s3:
                await ensure_bucket(s3, cache_bucket)

            async def cleanup() -> None:
                async with s3_client(ep, pool=4) as s3:
                    await delete_prefix(s3, cache_bucket, f"{prefix}/")

            stack.push_async_callback(cleanup)
            redis = stack.enter_context(RedisServer(tmp / "redis-identity"))
            service_env = {
                mode: {
                    **env,
                    **mode_env(mode),
                    "ZIPEDGE_REDIS_URL": redis.url,
                    "ZIPEDGE_CACHE": f"s3://{cache_bucket}/{prefix}/{mode}",
                }
                for mode in MODES
            }
            log(f"identity: redirects, off and on alternately, {ROUNDS} runs each")
            async with contextlib.AsyncExitStack() as servers:
                started = {
                    mode: await _start_cached(ep, cached_ds, service_env[mode], mode, logs, servers)
                    for mode in MODES
                }
                await _redirects(started, res, settings, logs)
            log(f"identity: cold streams, off and on alternately, {reps} each")
            await _cold_streams(ep, stream_ds, service_env, res, reps, logs)
    except Exception as exc:  # recorded; the run goes on
        res.error = f"{type(exc).__name__}: {exc}"
        log(f"identity FAILED: {res.error}")
    return res


def render(res: IdentityResult, wrk_line: str, stream_ds: Dataset) -> str:
    lines = [
        f"Identity: authentication + rate limiting on vs off ({wrk_line}, one service process each, Redis)"
    ]
    if res.error:
        lines.append(f"  FAILED: {res.error}")
    for mode in MODES:
        run = res.redirects.get(mode)
        stream = res.stream_s.get(mode)
        if run is None or stream is None:
            continue
        ttfb_ms = res.stream_ttfb_s[mode] * 1000
        lines.append(
            f"  {mode:>3}: redirects {run.rps:6.0f} req/s (best of {ROUNDS}; p50 {run.p50_ms:.2f} ms, "
            f"p99 {run.p99_ms:.2f} ms; {res.cpu_ms_per_redirect[mode]:.3f} ms CPU each); "
            f"cold stream {stream_ds.describe()} {stream:.3f} s (TTFB {ttfb_ms:.0f} ms)"
        )
    if res.redirect_ratio is not None and res.stream_ratio is not None:
        verdict = "met" if res.redirect_ratio >= REDIRECT_GOAL else "MISSED"
        lines.append(
            f"  redirects on/off {res.redirect_ratio:.2f} × (goal >= {REDIRECT_GOAL}: {verdict}); "
            f"cold stream time on/off {res.stream_ratio:.2f} ×"
        )
    return "\n".join(lines)
