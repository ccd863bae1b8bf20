"""The tee never slows or fails its stream; only complete, exact archives get published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.cache.base import CacheEntry
from service.cache.lock import LocalBuildLock
from service.cache.memory import MemoryArchiveCache
from service.cache.tee import Build, Tee, TeeOutcome
from service.exceptions import StreamAborted

ID = "0123456789abcdef0123456789abcdef"


async def tee_for(cache: MemoryArchiveCache, lock: LocalBuildLock, size: int, max_lag: int = 1 << 20) -> Tee:
    lease = await lock.try_acquire(ID)
    assert lease is not None
    writer = await cache.writer(CacheEntry(ID, ID, size, "a.zip", 0))
    return Tee(writer, lease, max_lag=max_lag, archive_id=ID)


async def test_complete_stream_is_committed_and_lock_released() -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    tee = await tee_for(cache, lock, 6)
    assert await lock.try_acquire(ID) is None  # held while building
    tee.offer(b"abc")
    tee.offer(b"def")
    tee.finish()
    await tee.task
    assert tee.outcome is TeeOutcome.COMMITTED and cache.objects[ID] == b"abcdef"
    assert ID not in lock.held


async def test_short_stream_is_never_published() -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    tee = await tee_for(cache, lock, 10)
    tee.offer(b"abc")
    tee.finish()
    await tee.task
    assert tee.outcome is TeeOutcome.FAILED and ID not in cache.objects
    assert cache.writers[0].aborted


async def test_a_lagging_cache_write_is_dropped_without_waiting() -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    tee = await tee_for(cache, lock, 100, max_lag=10)
    tee.offer(b"x" * 8)  # queued; the writer task has not run yet
    tee.offer(b"x" * 8)  # 16 > 10 behind: dropped, returns at once
    assert tee.dropped
    tee.finish()
    await tee.task
    assert tee.outcome is TeeOutcome.DROPPED and ID not in cache.objects and ID not in lock.held


async def test_lost_lock_drops_the_write() -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    tee = await tee_for(cache, lock, 3)
    lock.held.discard(ID)  # someone removed it
    tee.offer(b"abc")
    tee.finish()
    await tee.task
    assert tee.outcome is TeeOutcome.DROPPED and ID not in cache.objects


async def chunks(parts: list[bytes], fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part
    if fail:
        raise StreamAborted("source gone")


async def test_build_serves_the_client_and_the_cache() -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    build = Build(chunks([b"ab", b"cd", b"ef"]), await tee_for(cache, lock, 6))
    received = b"".join([c async for c in build.client_chunks()])
    await build.wait()
    assert received == b"abcdef" == cache.objects[ID]


async def test_build_failure_reaches_the_client_and_caches_nothing() -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    build = Build(chunks([b"ab"], fail=True), await tee_for(cache, lock, 6))
    with pytest.raises(StreamAborted):
        async for _ in build.client_chunks():
            pass
    await build.wait()
    assert ID not in cache.objects and build.tee.outcome is TeeOutcome.DROPPED


@pytest.mark.parametrize("finish", [True, False])
async def test_detached_build_finishes_or_stops(finish: bool) -> None:
    cache, lock = MemoryArchiveCache(), LocalBuildLock()
    build = Build(chunks([bytes([i]) for i in range(50)]), await tee_for(cache, lock, 50, max_lag=4))
    stream = build.client_chunks()
    await anext(stream)
    build.detach(finish=finish)
    await build.wait()
    assert (ID in cache.objects) is finish
    if finish:
        assert cache.objects[ID] == bytes(range(50))
