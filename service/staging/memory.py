"""Staging in dicts, filing into a `MemorySource`: the twin for unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from service.exceptions import UploadExists, UploadIncomplete, UploadMismatch
from service.sigv4 import PresignedPut, put_headers
from service.sources.memory import MemorySource
from service.staging.base import Placed, Staged, crc32


@dataclass
class MemoryStaging:
    source: MemorySource
    #: True: like S3 (clients PUT to storage, which keeps a CRC); False: like a folder
    direct: bool = True
    bodies: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: final key -> the upload that filed it
    owners: dict[str, str] = field(default_factory=dict)

    async def presign(
        self, key: str, *, size: int, content_type: str, crc32: int | None, expires_s: int, body_url: str
    ) -> PresignedPut:
        if self.direct:  # no signature to bind a CRC into: the twin's storage checks none
            return PresignedPut(
                f"memory://staging/{key}", put_headers(size=size, content_type=content_type, crc32=None)
            )
        return PresignedPut(body_url, put_headers(size=size, content_type=content_type, crc32=crc32))

    def stage(self, key: str, body: bytes, content_type: str) -> None:
        """What a client's PUT does (tests call it)."""
        self.bodies[key] = (body, content_type)

    async def receive(self, key: str, body: AsyncIterator[bytes], *, size: int, crc32: int | None) -> int:
        data = b"".join([chunk async for chunk in body])
        if len(data) != size or (crc32 is not None and _crc(data) != crc32):
            raise UploadMismatch("the body is not what was announced")
        if key in self.bodies:
            raise UploadExists("this upload already has a body")
        self.bodies[key] = (data, "")
        return _crc(data)

    async def head(self, key: str) -> Staged | None:
        if key not in self.bodies:
            return None
        data, kind = self.bodies[key]
        return Staged(len(data), kind, _crc(data) if self.direct else None)

    async def checksum(self, key: str) -> int:
        return _crc(self.bodies[key][0])

    async def place(
        self, key: str, final_key: str, *, upload_id: str, content_type: str, size: int, taken_at: float
    ) -> Placed | None:
        if final_key in self.source.objects:
            if self.owners.get(final_key) != upload_id:
                return None
        else:
            if key not in self.bodies:
                raise UploadIncomplete("nothing staged")
            self.source.put(final_key, self.bodies[key][0], mtime=int(taken_at))
            self.owners[final_key] = upload_id
        info = await self.source.stat(final_key)
        return Placed(final_key, info.etag, info.size, info.mtime)

    async def delete(self, key: str) -> None:
        self.bodies.pop(key, None)

    async def check(self) -> None:
        return None


def _crc(data: bytes) -> int:
    return crc32(data) & 0xFFFFFFFF
