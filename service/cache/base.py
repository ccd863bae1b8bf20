"""What a cache of finished archives offers, whatever holds it.

Cache objects are content-addressed and immutable: `<cache prefix>/<objects id>.zip`,
keyed by the objects (`Manifest.objects_id`), holding the layout they were first built in
(its `archive_id` is recorded with them and is their ETag), so learning CRCs later never
costs a second build. The
truth about "is it cached?" is the store itself; a short positive memo sits in front (an
archive never disappears within its lifetime rules), never a negative one. A new object
is written through a `CacheWriter` and becomes visible only on `commit`, which refuses any
byte count other than the promised one; any failure aborts it, so nothing partial is ever
visible. Implementations: `s3.py` (production), `folder.py` (the embedded default, served
by the service itself) and `memory.py` (the twin for unit tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from aiocache import SimpleMemoryCache

from service.constants import CACHE_PARTS_IN_FLIGHT, CACHE_POSITIVE_MEMO_S

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CachedArchive:
    objects_id: str
    #: the layout it holds: its ETag
    archive_id: str
    size: int


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What a writer records beside the bytes, so a cached archive answers like the live
    stream did (the same `ETag` and `Last-Modified`) and downloads under its name."""

    objects_id: str
    archive_id: str
    size: int
    filename: str
    last_modified: int  #: seconds since the epoch: the newest member's mtime


class CacheWriter(Protocol):
    """Receives one archive's bytes in order; nothing is visible before `commit`."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> bool:
        """Publish the object if exactly the promised bytes were written. True if this
        writer published it, False if it already existed. Raises CacheWriteFailed."""
        ...

    async def abort(self) -> None: ...


class ArchiveCache(Protocol):
    async def lookup(self, objects_id: str) -> CachedArchive | None:
        """The cached archive of these objects, or None. `CacheMisconfigured` when access is refused,
        `DependencyUnavailable` when the store cannot be asked."""
        ...

    async def writer(self, entry: CacheEntry, *, parts_in_flight: int = CACHE_PARTS_IN_FLIGHT) -> CacheWriter:
        """A writer for a new cache object; `CacheWriteFailed` if none can be started.
        `parts_in_flight`: how many parts it may upload at once, where a store uploads in
        parts (a job, with no client to keep pace with, may hold more)."""
        ...

    async def url(self, objects_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        """Where a client downloads the cached archive (stable within a time window), for
        a `GET` or a `HEAD` request."""
        ...

    async def served_file(self, objects_id: str) -> tuple[Path, CachedArchive] | None:
        """The file of a cached archive that this process serves itself (a folder cache),
        or None: not cached, or the cache is served by someone else (S3, the edge)."""
        ...

    async def check(self) -> None: ...


async def settle(work: Awaitable[T]) -> T:
    """Run `work` to the end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): a half-done abort would leave a temp file or an upload behind."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


class PositiveMemo:
    """Positive lookups, briefly (aiocache's in-process TTL cache)."""

    def __init__(self) -> None:
        # timeout=None: otherwise every lookup of this dict runs in asyncio.wait_for.
        self._cache = SimpleMemoryCache(timeout=None)

    async def get(self, objects_id: str) -> CachedArchive | None:
        found: CachedArchive | None = await self._cache.get(objects_id)
        return found

    async def remember(self, found: CachedArchive) -> None:
        await self._cache.set(found.objects_id, found, ttl=CACHE_POSITIVE_MEMO_S)
