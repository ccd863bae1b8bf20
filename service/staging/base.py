"""What a staging area offers the upload use case (`service/uploads.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from service.sigv4 import PresignedPut

try:
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - a platform without isal wheels
    from zlib import crc32

__all__ = ["Placed", "Staged", "Staging", "crc32"]

#: Object metadata naming the upload that filed an object (`x-amz-meta-zipedge-upload`):
#: how a repeated complete recognises its own copy.
UPLOAD_MARKER = "zipedge-upload"


@dataclass(frozen=True, slots=True)
class Staged:
    """A body waiting in staging, as storage describes it."""

    size: int
    content_type: str
    #: the full-object CRC-32 storage verified on the PUT, None when it has none
    crc32: int | None


@dataclass(frozen=True, slots=True)
class Placed:
    """A completed photo at its final key (relative to the source root), with the
    validator and mtime a listing of its day will show."""

    key: str
    etag: str
    size: int
    mtime: int


class Staging(Protocol):
    async def presign(
        self, key: str, *, size: int, content_type: str, crc32: int | None, expires_s: int, body_url: str
    ) -> PresignedPut:
        """Where and how the client PUTs the body of `key`, bound to size, type, CRC-32 and
        `If-None-Match: *`: storage's own presigned URL, or `body_url` (the service's signed
        `PUT …/body`, which hands the body to `receive`) for a staging that has none."""
        ...

    async def receive(self, key: str, body: AsyncIterator[bytes], *, size: int, crc32: int | None) -> int:
        """Store `body` under `key`, checking size and CRC while writing, never holding it
        whole; its CRC-32. `UploadMismatch` (nothing stored) when it is not as declared,
        `UploadExists` when `key` already holds a body."""
        ...

    async def head(self, key: str) -> Staged | None:
        """The staged body, or None when nothing is there (yet)."""
        ...

    async def checksum(self, key: str) -> int:
        """The CRC-32 of the staged body, read once."""
        ...

    async def place(
        self, key: str, final_key: str, *, upload_id: str, content_type: str, size: int, taken_at: float
    ) -> Placed | None:
        """Copy the staged body to `final_key` of the source unless an object is already
        there, never overwriting one. The object if this upload made it (now or in an
        earlier attempt), None when the key belongs to another object."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the staged body; fine when it is gone."""
        ...

    async def check(self) -> None: ...
