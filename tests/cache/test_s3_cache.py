"""Build once, serve many against real parts: SeaweedFS (SigV4 enforced) for source and
cache, redis-server for the build lock, uvicorn serving the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.app import create_app
from service.constants import S3_MAX_ATTEMPTS, STALE_MULTIPART_LOCK_TTLS
from service.janitor import run_janitor
from service.runtime import open_runtime
from service.settings import Settings
from service.stack.redis import RedisServer
from service.stack.seaweedfs import SeaweedFS
from service.streams import Streams
from service.uploads import uploads_of
from tests.servers import serve
from tests.zipcheck import check_archive, sha256

pytestmark = pytest.mark.integration

RANGE = {"from": "2025-01-01", "to": "2025-01-02"}


@dataclass
class Stack:
    seaweedfs: SeaweedFS
    client: Any
    source_bucket: str
    cache_bucket: str
    objects: dict[str, bytes]
    tmp: Path

    def settings(self, redis_url: str, **env: str) -> Settings:
        return Settings.from_env(
            {
                "ZIPEDGE_SOURCE": f"s3://{self.source_bucket}/photos",
                "ZIPEDGE_CACHE": f"s3://{self.cache_bucket}/archives",
                "ZIPEDGE_REDIS_URL": redis_url,
                "ZIPEDGE_DATA_DIR": str(self.tmp / "var"),
                "AWS_ENDPOINT_URL": self.seaweedfs.endpoint_url,
                "AWS_ACCESS_KEY_ID": self.seaweedfs.access_key,
                "AWS_SECRET_ACCESS_KEY": self.seaweedfs.secret_key,
                "AWS_REGION": self.seaweedfs.region,
                **env,
            }
        )

    async def cache_keys(self) -> list[str]:
        listed = await self.client.list_objects_v2(Bucket=self.cache_bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    async def uploads_in_progress(self) -> list[dict[str, Any]]:
        listed = await self.client.list_multipart_uploads(Bucket=self.cache_bucket)
        uploads: list[dict[str, Any]] = listed.get("Uploads", [])
        return uploads

    def expected(self) -> dict[str, str]:
        return {k: sha256(v) for k, v in sorted(self.objects.items())}


@pytest.fixture
async def stack(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Stack]:
    redis.Redis.from_url(redis_server.url).flushall()
    cache_bucket = f"c-{uuid.uuid4().hex[:20]}"
    seaweedfs.create_bucket(cache_bucket)
    objects = {f"2025/01/0{1 + i % 2}/CAR{i:03d}.jpg": os.urandom(300_000 + i) for i in range(40)}
    semaphore = asyncio.Semaphore(16)

    async def put(key: str, data: bytes) -> None:
        async with semaphore:
            await s3_client.put_object(Bucket=s3_bucket, Key=f"photos/{key}", Body=data)

    await asyncio.gather(*(put(k, v) for k, v in objects.items()))
    yield Stack(seaweedfs, s3_client, s3_bucket, cache_bucket, objects, tmp_path)


async def settle(streams: Streams) -> None:
    deadline = time.monotonic() + 30
    while streams.building or streams.active:
        assert time.monotonic() < deadline, "builds did not settle"
        await asyncio.sleep(0.02)


async def test_stream_then_redirect_to_a_stable_presigned_url(
    stack: Stack, redis_server: RedisServer
) -> None:
    app = create_app(stack.settings(redis_server.url))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            first = await client.get("/v1/zip", params=RANGE)
            assert first.status_code == 200
            await settle(app.state.services.streams)
            keys = await stack.cache_keys()
            assert len(keys) == 1 and keys[0].startswith("archives/") and keys[0].endswith(".zip")
            objects_id = keys[0].removeprefix("archives/").removesuffix(".zip")
            assert await stack.uploads_in_progress() == []
            cached = await stack.client.head_object(Bucket=stack.cache_bucket, Key=keys[0])
            # Keyed by the objects, labelled with the layout the stream sent (its ETag).
            assert cached["Metadata"]["zipedge-archive-id"] == first.headers["etag"].strip('"')
            assert cached["Metadata"]["zipedge-last-modified"] == first.headers["last-modified"]

            second = await client.get("/v1/zip", params=RANGE)
            third = await client.get("/v1/zip", params=RANGE)
            head = await client.head("/v1/zip", params=RANGE)
    assert second.status_code == third.status_code == head.status_code == 302
    assert second.headers["etag"] == first.headers["etag"]  # the cached bytes are the first's
    location = second.headers["location"]
    assert location == third.headers["location"]  # byte-identical
    head_location = head.headers["location"]
    assert head_location != location  # straight to S3, a HEAD needs a URL signed for HEAD
    assert location.startswith(
        f"{stack.seaweedfs.endpoint_url}/{stack.cache_bucket}/archives/{objects_id}.zip?"
    )

    async with httpx.AsyncClient(timeout=60) as plain:  # no credentials: the URL is the key
        served = await plain.get(location)
        part = await plain.get(location, headers={"Range": "bytes=1000-1999"})
        tampered = await plain.get(location[:-4] + ("0000" if not location.endswith("0000") else "1111"))
        headed = await plain.head(head_location)
        head_on_get_url = await plain.head(location)
    assert headed.status_code == 200 and int(headed.headers["content-length"]) == len(first.content)
    assert head_on_get_url.status_code == 403  # why HEAD gets its own URL
    assert served.status_code == 200 and served.content == first.content
    assert "photos-2025-01-01_2025-01-02.zip" in served.headers["content-disposition"]
    assert part.status_code == 206 and part.content == first.content[1000:2000]
    assert tampered.status_code == 403
    path = stack.tmp / "cached.zip"
    path.write_bytes(served.content)
    check_archive(path, stack.expected())


async def test_behind_the_edge_head_and_get_share_one_url(stack: Stack, redis_server: RedisServer) -> None:
    """The edge fetches a HEAD upstream as a GET (proxy_cache_convert_head): one URL."""
    app = create_app(stack.settings(redis_server.url, ZIPEDGE_PUBLIC_URL="http://edge.example"))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            assert (await client.get("/v1/zip", params=RANGE)).status_code == 200
            await settle(app.state.services.streams)
            get = await client.get("/v1/zip", params=RANGE)
            head = await client.head("/v1/zip", params=RANGE)
    assert get.status_code == head.status_code == 302
    assert get.headers["location"] == head.headers["location"]
    assert get.headers["location"].startswith("http://edge.example/")


async def test_five_concurrent_first_requests_build_one_object(
    stack: Stack, redis_server: RedisServer
) -> None:
    # Five streams at once from one client: over the default per-client limit of 4.
    app = create_app(stack.settings(redis_server.url, ZIPEDGE_MAX_STREAMS_PER_CLIENT="5"))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            responses = await asyncio.gather(*(client.get("/v1/zip", params=RANGE) for _ in range(5)))
            await settle(app.state.services.streams)
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.content for r in responses}) == 1
    path = stack.tmp / "one.zip"
    path.write_bytes(responses[0].content)
    check_archive(path, stack.expected())
    assert len(await stack.cache_keys()) == 1
    assert await stack.uploads_in_progress() == []


async def stream_with_interruption(client: httpx.AsyncClient, interrupt: Any) -> bytes:
    """Read the first chunk, run `interrupt`, read the rest."""
    body = bytearray()
    async with client.stream("GET", "/v1/zip", params=RANGE) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        body += await anext(chunks)
        await interrupt()
        async for chunk in chunks:
            body += chunk
        assert len(body) == int(response.headers["content-length"])
    return bytes(body)


async def test_lock_lost_mid_build_drops_the_cache_write_not_the_client(
    stack: Stack, redis_server: RedisServer
) -> None:
    app = create_app(stack.settings(redis_server.url))
    keys = redis.Redis.from_url(redis_server.url)

    async def delete_lock() -> None:
        locks = keys.keys("zipedge:build:*")
        assert len(locks) == 1
        keys.delete(*locks)

    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            body = await stream_with_interruption(client, delete_lock)
            await settle(app.state.services.streams)
            again = await client.head("/v1/zip", params=RANGE)
    path = stack.tmp / "a.zip"
    path.write_bytes(body)
    check_archive(path, stack.expected())
    assert await stack.cache_keys() == []
    assert await stack.uploads_in_progress() == []
    assert again.status_code == 200  # not cached: the next request builds it


async def test_cache_write_failure_mid_build_leaves_the_client_untouched(
    stack: Stack, redis_server: RedisServer
) -> None:
    """A real fault: the multipart upload is aborted behind the builder's back."""
    app = create_app(stack.settings(redis_server.url))

    async def abort_upload() -> None:
        uploads = await stack.uploads_in_progress()
        assert len(uploads) == 1
        await stack.client.abort_multipart_upload(
            Bucket=stack.cache_bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]
        )

    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            body = await stream_with_interruption(client, abort_upload)
            await settle(app.state.services.streams)
    path = stack.tmp / "b.zip"
    path.write_bytes(body)
    check_archive(path, stack.expected())
    assert await stack.cache_keys() == []
    assert await stack.uploads_in_progress() == []


async def test_redis_down_still_streams_and_readyz_says_so(stack: Stack, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    app = create_app(stack.settings(server.url))
    with serve(app) as url:
        server.stop()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.get("/v1/zip", params=RANGE)
            ready = await client.get("/readyz")
            await settle(app.state.services.streams)
    assert response.status_code == 200
    path = tmp_path / "c.zip"
    path.write_bytes(response.content)
    check_archive(path, stack.expected())
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["redis"] != "ok" and checks["source"] == "ok" and checks["cache"] == "ok"
    assert await stack.cache_keys() == []  # no lock, no cache write


async def test_a_cache_that_refuses_access_is_a_loud_configuration_error(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A bucket policy mistake answers 403 to the cache HEAD. Taken for a miss, every
    request would start a cache upload (and fail it) forever; instead it is counted,
    logged loudly, and the archive streams without teeing."""
    from tests.s3_fixtures import LIMITED_BUCKET, LIMITED_KEY, LIMITED_SECRET

    prefix = f"p-{uuid.uuid4().hex[:12]}"
    for key, data in stack.objects.items():
        await stack.client.put_object(Bucket=LIMITED_BUCKET, Key=f"{prefix}/{key}", Body=data)
    settings = stack.settings(
        "",
        ZIPEDGE_SOURCE=f"s3://{LIMITED_BUCKET}/{prefix}",
        AWS_ACCESS_KEY_ID=LIMITED_KEY,
        AWS_SECRET_ACCESS_KEY=LIMITED_SECRET,
    )
    app = create_app(settings)
    with caplog.at_level("ERROR", logger="service"), serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(2):
                response = await client.get("/v1/zip", params=RANGE)
                assert response.status_code == 200  # streamed both times, never a redirect
                path = stack.tmp / "limited.zip"
                path.write_bytes(response.content)
                check_archive(path, stack.expected())
            metrics = (await client.get("/metrics")).text
    assert "zipedge_cache_misconfigured_total 2.0" in metrics
    assert any("CACHE MISCONFIGURED" in r.getMessage() for r in caplog.records)
    assert await stack.cache_keys() == [] and await stack.uploads_in_progress() == []


@pytest.mark.parametrize("parts_in_flight", [1, 4])
async def test_a_cache_object_of_several_parts_holds_exactly_the_bytes_written(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, parts_in_flight: int
) -> None:
    """Chunks of any size, crossing part boundaries (8 MiB), several parts in flight: the
    committed object is the bytes written, in order."""
    from service.cache.base import CacheEntry
    from service.cache.s3 import RedirectSigning, S3ArchiveCache
    from service.constants import CACHE_MIN_PART_BYTES
    from tests.s3_fixtures import s3_for

    body = os.urandom(2 * CACHE_MIN_PART_BYTES + 12_345)
    entry = CacheEntry("objs", "layout", len(body), "a.zip", 1_735_689_600)
    async with s3_for(seaweedfs) as s3:
        cache = S3ArchiveCache(s3, bucket=s3_bucket, prefix="c/", signing=RedirectSigning(3600, 3600, ""))
        writer = await cache.writer(entry, parts_in_flight=parts_in_flight)
        sizes = [1, 300_007, 96, 262_144, 5_000_000]  # repeated: every boundary falls mid-chunk
        offset = i = 0
        while offset < len(body):
            n = sizes[i % len(sizes)]
            await writer.write(body[offset : offset + n])
            offset, i = offset + n, i + 1
        assert await writer.commit()
    stored = await (await s3_client.get_object(Bucket=s3_bucket, Key="c/objs.zip"))["Body"].read()
    assert stored == body
    listed = await s3_client.list_multipart_uploads(Bucket=s3_bucket)
    assert not listed.get("Uploads")


class StorageProxy:
    """A TCP proxy in front of SeaweedFS. `cut` drops every connection and stops listening
    (storage gone: connections are refused); `restore` listens on the same port again.
    While `refuse_aborts` is above zero, the connection of each AbortMultipartUpload
    request (a DELETE with an uploadId) is reset instead of forwarded."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.refuse_aborts = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._requests(reader, upstream))
                group.create_task(self._pipe(up_reader, writer))
        except* (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()
                    self._writers.discard(end)

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        """Forward request by request (botocore never pipelines), so one can be refused."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            if method == "DELETE" and "uploadId=" in target and self.refuse_aborts > 0:
                self.refuse_aborts -= 1
                self.refused += 1
                raise ConnectionResetError("abort refused")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            upstream.write(head)
            if "chunked" in headers.get("transfer-encoding", ""):
                await self._pipe(reader, upstream)  # no more request boundaries to find here
                return
            left = int(headers.get("content-length") or 0)
            while left:
                data = await reader.read(min(left, 1 << 18))
                if not data:
                    return
                upstream.write(data)
                left -= len(data)
                await upstream.drain()
            await upstream.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 18):
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def storage_proxy(seaweedfs: SeaweedFS) -> AsyncIterator[StorageProxy]:
    proxy = StorageProxy(int(seaweedfs.endpoint_url.rsplit(":", 1)[1]))
    await proxy.restore()
    try:
        yield proxy
    finally:
        if proxy._server is not None:
            await proxy.cut()


#: A day of its own, large enough that a client reading one chunk leaves most of it unread
#: by the service (1 MiB prefetch, loopback socket buffers of a few MiB).
BIG_DAY = {"from": "2025-01-10", "to": "2025-01-10"}


async def big_day(stack: Stack) -> None:
    for i in range(24):
        await stack.client.put_object(
            Bucket=stack.source_bucket, Key=f"photos/2025/01/10/BIG{i:02d}.jpg", Body=os.urandom(1 << 20)
        )


async def test_storage_gone_mid_build_then_the_janitor_cleans_up(
    stack: Stack, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    await big_day(stack)
    async with storage_proxy(stack.seaweedfs) as proxy:
        settings = stack.settings(
            redis_server.url,
            AWS_ENDPOINT_URL=proxy.url,
            ZIPEDGE_S3_TIMEOUT_S="3",
            ZIPEDGE_PREFETCH_BYTES=str(1 << 20),
            ZIPEDGE_FETCH_CONCURRENCY="2",
        )
        app = create_app(settings)
        with caplog.at_level(logging.WARNING, logger="service"), serve(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                body = bytearray()
                with pytest.raises(httpx.TransportError):
                    async with client.stream("GET", "/v1/zip", params=BIG_DAY) as response:
                        assert response.status_code == 200
                        size = int(response.headers["content-length"])
                        chunks = response.aiter_raw()
                        body += await anext(chunks)
                        assert len(await stack.uploads_in_progress()) == 1  # the tee's
                        await proxy.cut()  # source and cache storage both gone
                        async for chunk in chunks:
                            body += chunk
                await settle(app.state.services.streams)
        # The client was cut off: it never holds something that looks like the whole file.
        assert len(body) < size
        await proxy.restore()
    # The abort could not reach storage either: the upload is left behind, nothing committed.
    assert any("could not abort multipart upload" in r.getMessage() for r in caplog.records)
    assert len(await stack.uploads_in_progress()) == 1
    assert await stack.cache_keys() == []
    direct = stack.settings(redis_server.url)
    async with open_runtime(direct) as runtime:
        # A janitor that runs once the upload is older than any live build's could be.
        later = datetime.now(UTC) + timedelta(seconds=direct.lock_ttl_s * STALE_MULTIPART_LOCK_TTLS + 1)
        lines = await run_janitor(runtime, uploads_of(runtime), now=later)
    assert any("aborted a stale multipart upload" in line for line in lines), lines
    assert await stack.uploads_in_progress() == []
    assert await stack.cache_keys() == []


async def test_an_abort_storage_refuses_at_first_is_retried(
    stack: Stack, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    await big_day(stack)
    async with storage_proxy(stack.seaweedfs) as proxy:
        settings = stack.settings(
            redis_server.url,
            AWS_ENDPOINT_URL=proxy.url,
            ZIPEDGE_TEE_ON_DISCONNECT="abort",
            ZIPEDGE_PREFETCH_BYTES=str(1 << 20),
        )
        app = create_app(settings)
        with caplog.at_level(logging.WARNING, logger="service"), serve(app) as url:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                async with client.stream("GET", "/v1/zip", params=BIG_DAY) as response:
                    assert response.status_code == 200
                    chunks = response.aiter_raw()
                    await anext(chunks)
                    assert len(await stack.uploads_in_progress()) == 1
                    # The client leaves: the build stops and aborts its upload. Storage refuses
                    # the first abort whole: its S3_MAX_ATTEMPTS attempts, each sent again once
                    # on a reset connection by the HTTP client, so the next one has to work.
                    proxy.refuse_aborts = 2 * S3_MAX_ATTEMPTS
                await settle(app.state.services.streams)
    assert proxy.refused == 2 * S3_MAX_ATTEMPTS and proxy.refuse_aborts == 0
    assert not any("could not abort" in r.getMessage() for r in caplog.records)
    assert await stack.uploads_in_progress() == []  # no janitor needed
    assert await stack.cache_keys() == []
