"""Cache objects in a dict: the twin of the S3 and folder caches for unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from service.cache.base import CachedArchive, CacheEntry, CacheWriter
from service.constants import CACHE_PARTS_IN_FLIGHT
from service.exceptions import CacheWriteFailed


@dataclass
class MemoryCacheWriter:
    cache: MemoryArchiveCache
    entry: CacheEntry
    data: bytearray = field(default_factory=bytearray)
    aborted: bool = False

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def commit(self) -> bool:
        if len(self.data) != self.entry.size:
            self.aborted = True
            raise CacheWriteFailed(f"wrote {len(self.data)} bytes, promised {self.entry.size}")
        if self.entry.objects_id in self.cache.objects:
            return False
        self.cache.objects[self.entry.objects_id] = bytes(self.data)
        self.cache.layouts[self.entry.objects_id] = self.entry.archive_id
        return True

    async def abort(self) -> None:
        self.aborted = True


@dataclass
class MemoryArchiveCache:
    objects: dict[str, bytes] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    writers: list[MemoryCacheWriter] = field(default_factory=list)

    async def lookup(self, objects_id: str) -> CachedArchive | None:
        data = self.objects.get(objects_id)
        if data is None:
            return None
        return CachedArchive(objects_id, self.layouts.get(objects_id, objects_id), len(data))

    async def writer(self, entry: CacheEntry, *, parts_in_flight: int = CACHE_PARTS_IN_FLIGHT) -> CacheWriter:
        writer = MemoryCacheWriter(self, entry)
        self.writers.append(writer)
        return writer

    async def url(self, objects_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        return f"memory://{objects_id}.zip"

    async def served_file(self, objects_id: str) -> tuple[Path, CachedArchive] | None:
        return None

    async def check(self) -> None:
        return None
