"""Uploads: what signing and verifying costs the service, and that the bytes never pass it.

* presign and complete: `POST /v1/uploads` and `POST /v1/uploads/{id}/complete` per second
  at one `zipedge serve` process (Redis records, SeaweedFS staging), 16 requests in flight.
* throughput: 200 × 200 KiB photos PUT through their presigned URLs (bound to size, type,
  CRC-32 and If-None-Match: SeaweedFS verifies the CRC; aiohttp) against plain PUTs of
  the same bytes (aioboto3 `put_object`, SigV4 headers, no checksum), both straight to
  SeaweedFS, 16 at a time. The service only signed: it is not in the byte path.
* visibility: from the `complete` answer to the photo being in its day's archive (a HEAD
  of `/v1/zip` whose size grew), in the process that completed it and in a second process
  on the same Redis, each day's listing cached beforehand.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.s3 import S3Endpoint, s3_client
from bench.stack import ZipedgeServer
from service.stack.redis import RedisServer

PHOTOS = 200
PHOTO_BYTES = 200 * 1024
IN_FLIGHT = 16
SIGNING_ROUNDS = 400
VISIBILITY_ROUNDS = 20
VISIBLE_TIMEOUT_S = 10.0


@dataclass(slots=True)
class UploadsResult:
    presign_per_s: float = 0.0
    complete_per_s: float = 0.0
    presign_and_complete_per_s: float = 0.0
    presigned_put_mb_s: float = 0.0
    presigned_put_photos_s: float = 0.0
    plain_put_mb_s: float = 0.0
    plain_put_photos_s: float = 0.0
    visible_same_process_ms: list[float] = field(default_factory=list)
    visible_other_process_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _gather_limited(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


def _announce(body: bytes, name: str, day: str) -> dict[str, Any]:
    return {
        "filename": name,
        "content_type": "image/jpeg",
        "size": len(body),
        "crc32": zlib.crc32(body),
        "taken_at": f"{day}T12:00:00Z",
    }


async def measure(
    direct: S3Endpoint, env: dict[str, str], logs: Path, log: Callable[[str], None]
) -> UploadsResult:
    result = UploadsResult()
    rng = random.Random(20250105)
    photos = [rng.randbytes(PHOTO_BYTES) for _ in range(PHOTOS)]
    with (
        tempfile.TemporaryDirectory(prefix="zipedge-bench-uploads-") as tmp,
        RedisServer(Path(tmp) / "redis") as redis,
    ):
        extra = {
            **env,
            "ZIPEDGE_REDIS_URL": redis.url,
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(Path(tmp) / "var"),
        }
        source = f"s3://{direct.bucket}/uploads-bench"
        async with (
            ZipedgeServer(direct, source, logs / "zipedge-uploads-a.log", extra) as a,
            ZipedgeServer(direct, source, logs / "zipedge-uploads-b.log", extra) as b,
            httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=IN_FLIGHT * 2)) as http,
        ):
            try:
                await _signing(http, a.base_url, photos[0], result, log)
                await _throughput(http, a.base_url, direct, photos, result, log)
                await _visibility(http, a.base_url, b.base_url, photos, result, log)
            except Exception as exc:  # reported, not fatal to the rest of the run
                result.errors.append(f"{type(exc).__name__}: {exc}")
    return result


async def _signing(
    http: httpx.AsyncClient, base: str, photo: bytes, result: UploadsResult, log: Callable[[str], None]
) -> None:
    """Presign rate, then complete rate of as many uploads (their bodies PUT in between)."""
    started = time.perf_counter()
    tickets = await _gather_limited(
        [
            lambda i=i: http.post(f"{base}/v1/uploads", json=_announce(photo, f"S{i:04d}", "2024-03-01"))
            for i in range(SIGNING_ROUNDS)
        ]
    )
    presign_s = time.perf_counter() - started
    docs = [t.json() for t in tickets]
    if any(t.status_code != 201 for t in tickets):
        raise RuntimeError(f"presign failed: {tickets[0].text[:200]}")
    puts = await _gather_limited(
        [lambda d=d: http.put(d["url"], content=photo, headers=d["headers"]) for d in docs]
    )
    if any(p.status_code != 200 for p in puts):
        raise RuntimeError(f"a presigned PUT failed: {puts[0].text[:200]}")
    started = time.perf_counter()
    done = await _gather_limited([lambda d=d: http.post(d["complete_url"]) for d in docs])
    complete_s = time.perf_counter() - started
    if any(d.status_code != 200 for d in done):
        raise RuntimeError(f"complete failed: {done[0].text[:200]}")
    result.presign_per_s = SIGNING_ROUNDS / presign_s
    result.complete_per_s = SIGNING_ROUNDS / complete_s
    result.presign_and_complete_per_s = SIGNING_ROUNDS / (presign_s + complete_s)
    log(f"uploads: {result.presign_per_s:.0f} presigns/s, {result.complete_per_s:.0f} completes/s")


async def _throughput(
    http: httpx.AsyncClient,
    base: str,
    direct: S3Endpoint,
    photos: list[bytes],
    result: UploadsResult,
    log: Callable[[str], None],
) -> None:
    total = sum(len(p) for p in photos)
    tickets = await _gather_limited(
        [
            lambda i=i, p=p: http.post(f"{base}/v1/uploads", json=_announce(p, f"T{i:04d}", "2024-03-02"))
            for i, p in enumerate(photos)
        ]
    )
    docs = [t.json() for t in tickets]
    if not all(d["url"].startswith(direct.endpoint_url) for d in docs):
        raise RuntimeError("an upload URL does not point at storage: the service would be in the byte path")
    # aiohttp for the bytes, as a lean client would (httpx costs ~3x the CPU per PUT here).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        async def put(url: str, body: bytes, headers: dict[str, str]) -> int:
            async with session.put(url, data=body, headers=headers) as answer:
                await answer.read()
                return answer.status

        started = time.perf_counter()
        statuses = await _gather_limited(
            [lambda d=d, p=p: put(d["url"], p, d["headers"]) for d, p in zip(docs, photos, strict=True)]
        )
        seconds = time.perf_counter() - started
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"a presigned PUT failed: {statuses}")
    result.presigned_put_mb_s = total / seconds / 1e6
    result.presigned_put_photos_s = len(photos) / seconds
    async with s3_client(direct, pool=IN_FLIGHT) as client:
        started = time.perf_counter()
        await _gather_limited(
            [
                lambda i=i, p=p: client.put_object(
                    Bucket=direct.bucket,
                    Key=f"uploads-bench-plain/{i:04d}.jpg",
                    Body=p,
                    ContentType="image/jpeg",
                )
                for i, p in enumerate(photos)
            ]
        )
        seconds = time.perf_counter() - started
    result.plain_put_mb_s = total / seconds / 1e6
    result.plain_put_photos_s = len(photos) / seconds
    log(
        f"uploads: presigned PUT {result.presigned_put_mb_s:.1f} MB/s, "
        f"plain PUT {result.plain_put_mb_s:.1f} MB/s"
    )


async def _visibility(
    http: httpx.AsyncClient,
    base_a: str,
    base_b: str,
    photos: list[bytes],
    result: UploadsResult,
    log: Callable[[str], None],
) -> None:
    for i in range(VISIBILITY_ROUNDS):
        day = f"2024-04-{i + 1:02d}"
        seed = photos[i]
        first = (await http.post(f"{base_a}/v1/uploads", json=_announce(seed, "A", day))).json()
        await http.put(first["url"], content=seed, headers=first["headers"])
        await http.post(first["complete_url"])
        zip_url = f"/v1/zip?from={day}&to={day}"
        sizes = [
            int((await http.head(f"{base}{zip_url}")).headers["content-length"]) for base in (base_a, base_b)
        ]
        ticket = (await http.post(f"{base_a}/v1/uploads", json=_announce(photos[-1 - i], "B", day))).json()
        await http.put(ticket["url"], content=photos[-1 - i], headers=ticket["headers"])
        done = await http.post(ticket["complete_url"])
        completed = time.perf_counter()
        assert done.status_code == 200, done.text
        for base, before, into in (
            (base_a, sizes[0], result.visible_same_process_ms),
            (base_b, sizes[1], result.visible_other_process_ms),
        ):
            while int((await http.head(f"{base}{zip_url}")).headers["content-length"]) == before:
                if time.perf_counter() - completed > VISIBLE_TIMEOUT_S:
                    raise RuntimeError(f"a completed photo stayed invisible in {base}")
                await asyncio.sleep(0.005)
            into.append((time.perf_counter() - completed) * 1000)
    log(
        f"uploads: complete -> in archive {statistics.median(result.visible_same_process_ms):.1f} ms "
        f"(same process), {statistics.median(result.visible_other_process_ms):.1f} ms (another process)"
    )


def render_uploads(result: UploadsResult) -> str:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):.1f}" if values else "-"

    lines = [
        "Uploads (one service process, Redis records, SeaweedFS staging, 16 in flight)",
        f"  presign: {result.presign_per_s:.0f}/s   complete: {result.complete_per_s:.0f}/s   "
        f"presign + complete: {result.presign_and_complete_per_s:.0f} uploads/s",
        f"  {PHOTOS} x {PHOTO_BYTES // 1024} KiB: presigned PUT {result.presigned_put_mb_s:.1f} MB/s "
        f"({result.presigned_put_photos_s:.0f} photos/s), plain PUT {result.plain_put_mb_s:.1f} MB/s "
        f"({result.plain_put_photos_s:.0f} photos/s)",
        f"  complete -> in the day's archive: median {median(result.visible_same_process_ms)} ms in the same "
        f"process, {median(result.visible_other_process_ms)} ms in another (max "
        f"{max(result.visible_other_process_ms, default=0):.1f})",
    ]
    lines += [f"  error: {e}" for e in result.errors]
    return "\n".join(lines)
