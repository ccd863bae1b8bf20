"""The stream pipeline's lifetimes: a stream that stops for any reason leaves nothing
running, holding a lock, or waiting forever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.archive.manifest import Candidate, Manifest, build_manifest
from service.cache.base import CacheEntry, CacheWriter
from service.cache.lock import LocalBuildLock
from service.cache.memory import MemoryArchiveCache
from service.exceptions import StreamAborted
from service.listing import DirectListings
from service.manifests import FolderManifestStore
from service.runtime import Runtime
from service.settings import Settings
from service.sources.memory import MemorySource
from service.streams import Streams


def manifest_of(source: MemorySource) -> Manifest:
    infos = [source._info(key) for key in sorted(source.objects)]
    candidates = [Candidate("key", i.key, i.key, i.size, i.etag, i.mtime) for i in infos]
    return build_manifest(candidates, source="memory:", filename="a.zip")


def runtime_for(tmp_path: Path, source: MemorySource, cache: MemoryArchiveCache | None) -> Runtime:
    settings = Settings.from_env({"ZIPEDGE_CACHE": ""}, cwd=tmp_path)
    return Runtime(
        settings=settings,
        source=source,
        listings=DirectListings(source),
        origin=None,
        manifests=FolderManifestStore(tmp_path / "manifests"),
        cache=cache,
        lock=LocalBuildLock(),
    )


def photos(count: int = 3, size: int = 70_000) -> MemorySource:
    source = MemorySource()
    for i in range(count):
        source.put(f"2025/01/01/CAR{i}.jpg", bytes([i]) * size)
    return source


class SlowToStartCache(MemoryArchiveCache):
    """Creating the cache object takes until `go` is set (an S3 CreateMultipartUpload
    that is slow to answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.creating = asyncio.Event()
        self.go = asyncio.Event()

    async def writer(self, entry: CacheEntry, *, parts_in_flight: int = 2) -> CacheWriter:
        self.creating.set()
        await self.go.wait()
        return await super().writer(entry)


async def test_a_client_leaving_while_the_upload_is_created_releases_the_build_lock(tmp_path: Path) -> None:
    source, cache = photos(), SlowToStartCache()
    runtime = runtime_for(tmp_path, source, cache)
    streams = Streams(runtime)
    manifest = manifest_of(source)

    async def download() -> None:
        async with contextlib.aclosing(streams.stream(manifest)) as chunks:
            async for _ in chunks:
                pass

    task = asyncio.create_task(download())
    await cache.creating.wait()
    task.cancel()  # the client leaves right then
    with pytest.raises(asyncio.CancelledError):
        await task
    assert isinstance(runtime.lock, LocalBuildLock)
    assert manifest.archive_id not in runtime.lock.held  # the next request may build it
    await streams.aclose()


class CrashingSource(MemorySource):
    """A source whose reads fail with an error that is not one of ours (a bug below)."""

    async def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncIterator[bytes]:
        yield b"x"
        raise RuntimeError("a bug in an adapter")


async def test_a_build_that_crashes_ends_its_client_instead_of_hanging(tmp_path: Path) -> None:
    source = CrashingSource()
    source.put("2025/01/01/a.jpg", b"x" * 100)
    runtime = runtime_for(tmp_path, source, MemoryArchiveCache())
    streams = Streams(runtime)
    manifest = manifest_of(source)
    async with asyncio.timeout(10):  # a hang fails the test instead of the suite
        with pytest.raises(StreamAborted):
            async with contextlib.aclosing(streams.stream(manifest)) as chunks:
                async for _ in chunks:
                    pass
    await streams.aclose()
    assert streams.building == 0


class GatedSource(MemorySource):
    """Reads hand out their first chunk, then wait for ever; `closed` counts the reads
    whose generator was closed."""

    def __init__(self) -> None:
        super().__init__(chunk_size=1000)
        self.closed = 0
        self.opened = 0

    async def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncIterator[bytes]:
        self.opened += 1
        try:
            yield self.objects[key][0][:1000]
            await asyncio.Event().wait()
            yield b""  # pragma: no cover - never reached
        finally:
            self.closed += 1


async def test_a_stream_without_tee_closes_every_read_when_its_client_leaves(tmp_path: Path) -> None:
    source = GatedSource()
    for i in range(4):
        source.put(f"2025/01/01/{i}.jpg", bytes([i]) * 5000)
    streams = Streams(runtime_for(tmp_path, source, None))
    chunks = streams.stream(manifest_of(source))
    assert await anext(chunks)  # the first local header
    assert await anext(chunks)  # the first object's first bytes
    await chunks.aclose()  # the client leaves
    assert source.opened and source.closed == source.opened  # at once, not by the GC
    assert streams.active == 0


async def test_large_manifests_are_built_off_the_event_loop() -> None:
    """The name policy, id and layout of 20,000 entries take a good fraction of a second:
    other requests (here a ticker) must keep being served meanwhile."""
    from service.resolver import build_off_loop

    candidates = [
        Candidate("key", f"2025/01/01/CAR{i:06d}.jpg", f"2025/01/01/car{i:06d}.JPG", 1000, "e", 0)
        for i in range(20_000)
    ]
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    manifest = await build_off_loop(candidates, source="memory:", filename="a.zip")
    stop.set()
    await running
    assert len(manifest.entries) == 20_000 and manifest.size > 0
    assert ticks - before > 1  # the loop ran while the manifest was being built
