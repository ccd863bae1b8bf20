"""A cancelled job never commits, and a job whose archive was committed never reads
cancelled: the build is held at a chosen point, the cancel sent, the build released, in
every ordering; in process, then on saq with a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from service.archive.manifest import Candidate, Manifest, build_manifest
from service.cache.base import CacheEntry, CacheWriter
from service.cache.lock import Lease, LocalBuildLock
from service.cache.memory import MemoryArchiveCache, MemoryCacheWriter
from service.exceptions import JobReady
from service.jobs.build import ArchiveBuilder
from service.jobs.local import LocalJobQueue
from service.jobs.model import JobStatus
from service.listing import DirectListings
from service.manifests import FolderManifestStore
from service.runtime import Runtime
from service.settings import Settings
from service.sources.memory import MemorySource
from service.stack.redis import RedisServer
from service.streams import Streams

#: Where a build is held: in the first write (before any part), in a later write (between
#: parts), after the last byte (in the lock's final check, before the commit is claimed),
#: and inside the commit itself (claimed: a cancel must wait and lose).
POINTS = ["before-first-part", "between-parts", "after-last-byte", "in-commit"]


@dataclass
class Hold:
    point: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def at(self, point: str) -> None:
        if point == self.point and not self.reached.is_set():
            self.reached.set()
            await self.release.wait()


class HeldWriter(MemoryCacheWriter):
    hold: Hold | None = None
    writes: int = 0

    async def write(self, chunk: bytes) -> None:
        assert self.hold is not None
        self.writes += 1
        await self.hold.at("before-first-part" if self.writes == 1 else "")
        if self.writes == 2:  # bytes written before it and after it (the writer joins
            await self.hold.at("between-parts")  # what is ready into sends of >= 256 KiB)
        await super().write(chunk)

    async def commit(self) -> bool:
        assert self.hold is not None
        await self.hold.at("in-commit")
        return await super().commit()


class HeldCache(MemoryArchiveCache):
    def __init__(self, hold: Hold) -> None:
        super().__init__()
        self.hold = hold

    async def writer(self, entry: CacheEntry, *, parts_in_flight: int = 2) -> CacheWriter:
        writer = HeldWriter(self, entry)
        writer.hold = self.hold
        self.writers.append(writer)
        return writer


class HeldLock(LocalBuildLock):
    def __init__(self, hold: Hold) -> None:
        super().__init__()
        self.hold = hold

    async def try_acquire(self, archive_id: str) -> Lease | None:
        lease = await super().try_acquire(archive_id)
        if lease is None:
            return None
        confirm = lease.confirm

        async def held_confirm() -> bool:
            await self.hold.at("after-last-byte")
            return await confirm()

        lease.confirm = held_confirm  # type: ignore[method-assign]
        return lease


def photos() -> MemorySource:
    source = MemorySource(chunk_size=16 * 1024)
    for i in range(24):  # ~1 MB: several sends of the writer, so several writes here
        source.put(f"2025/01/01/CAR{i}.jpg", bytes([i]) * 40_000)
    return source


def manifest_of(source: MemorySource) -> Manifest:
    infos = [source._info(k) for k in sorted(source.objects)]
    return build_manifest(
        [Candidate("key", i.key, i.key, i.size, i.etag, i.mtime) for i in infos],
        source="memory:",
        filename="a.zip",
    )


def runtime_for(tmp_path: Path, source: MemorySource, hold: Hold, **env: str) -> Runtime:
    return Runtime(
        settings=Settings.from_env({"ZIPEDGE_CACHE": "", **env}, cwd=tmp_path),
        source=source,
        listings=DirectListings(source),
        origin=None,
        manifests=FolderManifestStore(tmp_path / "manifests"),
        cache=HeldCache(hold),
        lock=HeldLock(hold),
    )


def assert_honest(status: JobStatus, cache: MemoryArchiveCache) -> None:
    """`cancelled` only with nothing committed and every upload aborted; else `ready`."""
    if status is JobStatus.CANCELLED:
        assert cache.objects == {}
        assert all(writer.aborted for writer in cache.writers)
    else:
        assert status is JobStatus.READY and len(cache.objects) == 1


@pytest.mark.parametrize("point", POINTS)
async def test_in_process_cancel_and_build_never_both_win(point: str, tmp_path: Path) -> None:
    hold = Hold(point)
    source = photos()
    runtime = runtime_for(tmp_path, source, hold)
    streams = Streams(runtime)
    queue = LocalJobQueue(ArchiveBuilder(runtime, streams), concurrency=1, retry_delay_s=0.01)
    try:
        view = await queue.submit(manifest_of(source))
        async with asyncio.timeout(20):
            await hold.reached.wait()
            cancelling = asyncio.create_task(queue.cancel(view.id))
            await asyncio.sleep(0.05)  # the cancel is in before the build moves on
            hold.release.set()
            try:
                answer = await cancelling
            except JobReady:
                answer = await queue.get(view.id)
        assert isinstance(runtime.cache, MemoryArchiveCache)
        if point == "in-commit":  # the commit was claimed first: it wins, honestly
            assert answer.status is JobStatus.READY
        else:
            assert answer.status is JobStatus.CANCELLED
        assert_honest(answer.status, runtime.cache)
        with contextlib.suppress(JobReady):
            again = await queue.cancel(view.id)  # a second cancel changes nothing
            assert again.status is answer.status
    finally:
        await queue.aclose()
        await streams.aclose()


# --- saq on redis-server, the build in a real (in-process) worker -----------------------------


@contextlib.asynccontextmanager
async def saq_worker(runtime: Runtime, streams: Streams, url: str) -> AsyncIterator[None]:
    from saq import Worker

    from service.jobs.gate import RedisCommitGate
    from service.jobs.saq_queue import FUNCTION, QUEUE_NAME, SweepSafeQueue, build_archive_job

    client = aioredis.Redis.from_url(url)
    queue = SweepSafeQueue(client, name=QUEUE_NAME)
    worker: Worker = Worker(  # type: ignore[type-arg]
        queue,
        functions=[(FUNCTION, build_archive_job)],
        concurrency=1,
        timers={"schedule": 1, "worker_info": 10, "sweep": 60, "abort": 1},
        dequeue_timeout=0.2,
    )
    worker.context.update(
        builder=ArchiveBuilder(runtime, streams), gate=RedisCommitGate(client), manifests=runtime.manifests
    )
    await queue.connect()
    running = asyncio.create_task(worker.start())
    try:
        yield
    finally:
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await queue.disconnect()
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize("point", POINTS)
async def test_on_saq_cancel_and_build_never_both_win(
    point: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    from service.jobs.saq_queue import SaqJobQueue

    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    hold = Hold(point)
    source = photos()
    runtime = runtime_for(tmp_path, source, hold, ZIPEDGE_REDIS_URL=redis_server.url)
    streams = Streams(runtime)
    jobs = SaqJobQueue(runtime.settings, runtime.manifests)
    await jobs.connect()
    try:
        async with saq_worker(runtime, streams, redis_server.url):
            view = await jobs.submit(manifest_of(source))
            async with asyncio.timeout(30):
                await hold.reached.wait()
                cancelling = asyncio.create_task(jobs.cancel(view.id))
                await asyncio.sleep(0.2)  # the gate is claimed by the cancel by now
                hold.release.set()
                try:
                    answer = await cancelling
                except JobReady:
                    answer = await jobs.get(view.id)
                while not answer.status.terminal:  # ready a moment after its commit
                    await asyncio.sleep(0.05)
                    answer = await jobs.get(view.id)
        assert isinstance(runtime.cache, MemoryArchiveCache)
        assert answer.status is (JobStatus.READY if point == "in-commit" else JobStatus.CANCELLED)
        assert_honest(answer.status, runtime.cache)
    finally:
        await jobs.aclose()
        await streams.aclose()


# --- a retry after an earlier attempt committed ------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "redis"])
@pytest.mark.parametrize("cached", [True, False])
async def test_a_retry_after_its_commit_is_ready_not_cancelled(
    kind: str, cached: bool, tmp_path: Path, private_redis_server: RedisServer
) -> None:
    # An attempt the sweep gave up on (its worker stalled past the heartbeat) may still
    # have committed; the retry finds the gate committed and the job is ready.
    from service.jobs.gate import Gate, LocalCommitGate, RedisCommitGate

    client = aioredis.Redis.from_url(private_redis_server.url)
    gate = LocalCommitGate() if kind == "local" else RedisCommitGate(client)
    source = photos()
    runtime = runtime_for(tmp_path, source, Hold("nowhere"))
    streams = Streams(runtime)
    builder = ArchiveBuilder(runtime, streams)
    manifest = manifest_of(source)

    async def report(progress: object) -> None:
        pass

    try:
        await builder.build(manifest, report, job_id="j1", gate=gate)
        assert await gate.state("j1") is Gate.COMMITTED
        assert isinstance(runtime.cache, MemoryArchiveCache) and len(runtime.cache.objects) == 1
        if not cached:  # the retry does not see the object (e.g. a lookup memo): it rebuilds
            runtime.cache.objects.clear()
        await builder.build(manifest, report, job_id="j1", gate=gate)  # no JobCancelled
        assert await gate.state("j1") is Gate.COMMITTED
        if cached:
            assert len(runtime.cache.writers) == 1  # nothing written again
        else:
            assert len(runtime.cache.writers) == 2 and runtime.cache.writers[-1].aborted
            assert runtime.cache.objects == {}  # the retry's copy was not committed
    finally:
        await streams.aclose()
        await client.aclose()
