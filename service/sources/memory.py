"""An in-memory source: the twin of the folder and S3 sources for unit tests and examples.

It can also inject the faults a real network makes (a body cut after some bytes), which
is how the retry-from-offset path is exercised without mocking a client library.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from service.constants import READ_CHUNK_BYTES
from service.exceptions import ObjectChanged, ObjectMissing, ObjectNotFound, SourceUnavailable
from service.sources.base import ObjectInfo


@dataclass
class _Fault:
    at: int  #: cut the body once this many bytes of the object have been sent
    times: int  #: how many reads fail this way before reads succeed again


@dataclass
class MemorySource:
    """Objects in a dict. `read_count` counts bodies opened (for tests of caching)."""

    objects: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    chunk_size: int = READ_CHUNK_BYTES
    read_count: int = 0
    opened_offsets: list[tuple[str, int]] = field(default_factory=list)
    _faults: dict[str, _Fault] = field(default_factory=dict)

    def put(self, key: str, data: bytes, *, mtime: int = 1_736_000_000) -> ObjectInfo:
        self.objects[key] = (data, mtime)
        return self._info(key)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def fail(self, key: str, *, at: int, times: int = 1) -> None:
        """Make the next `times` reads of `key` break once byte `at` has been sent."""
        self._faults[key] = _Fault(at, times)

    def _info(self, key: str) -> ObjectInfo:
        data, mtime = self.objects[key]
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return ObjectInfo(key=key, size=len(data), etag=etag, mtime=mtime)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return [self._info(k) for k in sorted(self.objects) if k.startswith(prefix)]

    async def stat(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise ObjectNotFound(f"no object {key!r}")
        return self._info(key)

    async def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncIterator[bytes]:
        self.read_count += 1
        self.opened_offsets.append((key, offset))
        if key not in self.objects:
            raise ObjectMissing(f"object {key!r} is gone")
        if etag and self._info(key).etag != etag:
            raise ObjectChanged(f"object {key!r} changed")
        data = self.objects[key][0]
        if length is not None:
            data = data[: offset + length]
        fault = self._faults.get(key)
        position = offset
        while position < len(data):
            if fault and fault.times > 0 and position >= fault.at:
                fault.times -= 1
                raise SourceUnavailable(f"connection reset while reading {key!r}")
            end = min(position + self.chunk_size, len(data))
            if fault and fault.times > 0 and position < fault.at < end:
                end = fault.at
            yield data[position:end]
            position = end

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
