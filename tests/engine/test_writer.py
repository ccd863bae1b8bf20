"""The writer and its prefetcher against the in-memory source: order, budget, retries,
honest failure and prompt cleanup."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from collections.abc import AsyncIterator

import pytest

from service.archive.manifest import Candidate, Entry, Manifest, build_manifest
from service.constants import READ_CHUNK_BYTES
from service.exceptions import StreamAborted
from service.prefetch import Prefetcher, Span
from service.sources.memory import MemorySource
from service.writer import Progress, write_archive
from tests.zipcheck import sha256


async def manifest_of(source: MemorySource) -> Manifest:
    infos = await source.list("")
    candidates = [Candidate("key", i.key, i.key, i.size, i.etag, i.mtime) for i in infos]
    return build_manifest(candidates, source="memory:", filename="t.zip")


def opener(source: MemorySource):  # type: ignore[no-untyped-def]
    def open_(entry: Entry, offset: int, stop: int | None = None) -> AsyncIterator[bytes]:
        length = None if stop is None else stop - offset
        return source.read(entry.ref, offset=offset, etag=entry.etag, length=length)

    return open_


async def collect(manifest: Manifest, source: MemorySource, **kwargs: int) -> bytes:
    options = {"concurrency": 4, "budget": 4 * READ_CHUNK_BYTES} | kwargs
    out = bytearray()
    async for chunk in write_archive(manifest, opener(source), **options):
        out += chunk
    return bytes(out)


def assert_valid(archive: bytes, source: MemorySource) -> None:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        assert z.testzip() is None
        for info in z.infolist():
            assert sha256(z.read(info)) == sha256(source.objects[info.filename][0])


@pytest.fixture
def source() -> MemorySource:
    memory = MemorySource(chunk_size=64 * 1024)
    sizes = [0, 1, 1000, 200 * 1024, 3 * READ_CHUNK_BYTES + 17, 5, 0, 64 * 1024]
    for i, size in enumerate(sizes):
        memory.put(f"2025/01/0{i % 3 + 1}/obj{i:02d}.bin", os.urandom(size), mtime=1_736_000_000 + i)
    return memory


async def test_archive_is_exact_and_in_manifest_order(source: MemorySource) -> None:
    manifest = await manifest_of(source)
    progress = Progress()
    archive = bytearray()
    async for chunk in write_archive(
        manifest, opener(source), concurrency=3, budget=READ_CHUNK_BYTES, progress=progress
    ):
        archive += chunk
    assert len(archive) == manifest.size == progress.bytes_done == progress.bytes_total
    assert progress.entries_done == len(manifest.entries)
    with zipfile.ZipFile(io.BytesIO(bytes(archive))) as z:
        assert [i.filename for i in z.infolist()] == [e.name for e in manifest.entries]
    assert_valid(bytes(archive), source)


async def test_same_manifest_gives_the_same_bytes(source: MemorySource) -> None:
    manifest = await manifest_of(source)
    assert await collect(manifest, source, concurrency=1) == await collect(manifest, source, concurrency=8)


async def read_slowly(sizes: dict[str, int], *, budget: int) -> Prefetcher:
    """Prefetch objects of these sizes for a slow client (fetchers run ahead as far as
    allowed), checking the memory bound at every chunk; the finished prefetcher."""
    source = MemorySource(chunk_size=READ_CHUNK_BYTES)
    for key, size in sizes.items():
        source.put(key, os.urandom(size))
    manifest = await manifest_of(source)
    async with Prefetcher(
        [Span.whole(e) for e in manifest.entries], opener(source), concurrency=8, budget=budget
    ) as prefetcher:
        for index in range(len(manifest.entries)):
            async for _ in prefetcher.chunks(index):
                await asyncio.sleep(0)
                assert prefetcher.buffered <= budget + 2 * READ_CHUNK_BYTES
    return prefetcher


async def test_memory_stays_within_the_budget() -> None:
    sizes = {f"big/{i:02d}.bin": 2 * READ_CHUNK_BYTES + i for i in range(12)}
    # Larger than the whole budget: read only as the head, chunk by chunk.
    sizes |= {f"huge/{i}.bin": 7 * READ_CHUNK_BYTES for i in range(2)}
    budget = 3 * READ_CHUNK_BYTES
    prefetcher = await read_slowly(sizes, budget=budget)
    assert prefetcher.peak_buffered <= budget + 2 * READ_CHUNK_BYTES
    assert prefetcher.peak_buffered >= 2 * READ_CHUNK_BYTES  # it did read ahead


async def test_large_objects_are_fetched_whole_within_the_budget() -> None:
    """Only as many objects as fit whole in the budget are in flight: many partly read
    large objects would leave the one being written a 1/N share of the bandwidth."""
    sizes = {f"big/{i:02d}.bin": 4 * READ_CHUNK_BYTES for i in range(10)}
    prefetcher = await read_slowly(sizes, budget=12 * READ_CHUNK_BYTES)
    # 3 x 4 chunks fit the budget, and a 4th is claimed as the head's last chunk goes out;
    # without the admission all 8 workers would each hold one.
    assert 3 <= prefetcher.peak_ahead <= 4


async def test_a_broken_read_resumes_from_the_failed_byte(source: MemorySource) -> None:
    key = "2025/01/02/obj04.bin"
    size = len(source.objects[key][0])
    source.fail(key, at=size // 2, times=2)
    manifest = await manifest_of(source)
    archive = await collect(manifest, source)
    assert_valid(archive, source)
    offsets = [offset for k, offset in source.opened_offsets if k == key]
    assert offsets[0] == 0 and len(offsets) == 3
    assert all(0 < o <= size // 2 for o in offsets[1:])  # never from zero again


async def test_a_source_that_keeps_failing_aborts_the_stream(source: MemorySource) -> None:
    source.fail("2025/01/02/obj04.bin", at=10, times=100)
    manifest = await manifest_of(source)
    sent = 0
    with pytest.raises(StreamAborted, match="obj04"):
        async for chunk in write_archive(manifest, opener(source), concurrency=2, budget=READ_CHUNK_BYTES):
            sent += len(chunk)
    assert sent < manifest.size


@pytest.mark.parametrize("change", ["changed", "deleted"])
async def test_an_object_changed_since_listing_aborts_the_stream(source: MemorySource, change: str) -> None:
    manifest = await manifest_of(source)
    key = manifest.entries[-1].ref
    if change == "deleted":
        source.delete(key)
    else:
        source.put(key, b"new content")
    with pytest.raises(StreamAborted):
        await collect(manifest, source)


async def test_known_crc_mismatch_aborts(source: MemorySource) -> None:
    manifest = await manifest_of(source)
    entries = tuple(
        Entry(e.name, e.kind, e.ref, e.size, e.etag, e.mtime, 12345 if e.size else 0)
        for e in manifest.entries
    )
    lying = Manifest(entries=entries, source=manifest.source)
    with pytest.raises(StreamAborted, match="CRC"):
        await collect(lying, source)


async def test_leaving_early_cancels_every_fetch(source: MemorySource) -> None:
    manifest = await manifest_of(source)
    before = set(asyncio.all_tasks())
    stream = write_archive(manifest, opener(source), concurrency=4, budget=READ_CHUNK_BYTES)
    await anext(stream)
    await stream.aclose()
    await asyncio.sleep(0)
    assert set(asyncio.all_tasks()) == before


async def test_consuming_out_of_order_is_a_bug(source: MemorySource) -> None:
    manifest = await manifest_of(source)
    async with Prefetcher(
        [Span.whole(e) for e in manifest.entries], opener(source), concurrency=2, budget=READ_CHUNK_BYTES
    ) as p:
        with pytest.raises(RuntimeError):
            await anext(p.chunks(1))
