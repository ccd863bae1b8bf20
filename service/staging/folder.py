"""Staging in a folder (the embedded default): the service receives the body itself.

`receive` streams the body into a hidden part file, checking size and CRC-32 as it goes
and never holding more than one write buffer, then hard-links it under its key: `link`
fails when the name exists, so a second body for one upload is refused (`If-None-Match:
*`). `place` files it the same way, a hard link from staging into the day folder: it never
replaces a file, two concurrent attempts give one file, and the same inode tells a
repeated complete that the file is its own. Staging must be on the same filesystem as the
source (a hard link cannot cross); otherwise the body is copied next to its target first.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from service.constants import UPLOAD_FOLDER_WRITE_BYTES
from service.exceptions import (
    DependencyUnavailable,
    SourceUnavailable,
    UploadExists,
    UploadIncomplete,
    UploadMismatch,
)
from service.sigv4 import PresignedPut, put_headers
from service.sources.folder import FolderSource
from service.staging.base import Placed, Staged, crc32


class FolderStaging:
    def __init__(self, root: Path, source: FolderSource) -> None:
        self.root = root
        self.source = source

    def _path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"not a staging key: {key!r}")
        return self.root / key

    async def presign(
        self, key: str, *, size: int, content_type: str, crc32: int | None, expires_s: int, body_url: str
    ) -> PresignedPut:
        # A folder has no URL of its own: bodies come through the service.
        return PresignedPut(body_url, put_headers(size=size, content_type=content_type, crc32=crc32))

    async def receive(self, key: str, body: AsyncIterator[bytes], *, size: int, crc32: int | None) -> int:
        final = self._path(key)
        part = self.root / f".{key}.{secrets.token_hex(4)}.part"
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        handle = await asyncio.to_thread(part.open, "xb")
        try:
            crc = await _write(handle, body, size)
            await asyncio.to_thread(handle.close)
            if crc32 is not None and crc != crc32:
                raise UploadMismatch(f"the body's CRC-32 is {crc:08x}, not the {crc32:08x} announced")
            try:
                await asyncio.to_thread(os.link, part, final)
            except FileExistsError:
                raise UploadExists("this upload already has a body") from None
            return crc
        finally:
            handle.close()
            await asyncio.to_thread(part.unlink, missing_ok=True)

    async def head(self, key: str) -> Staged | None:
        try:
            st = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            return None
        # The body was checked against the declared CRC while it was written, but the
        # folder keeps no checksum: completion computes it again (one read, local).
        return Staged(size=st.st_size, content_type="", crc32=None)

    async def checksum(self, key: str) -> int:
        def read() -> int:
            crc = 0
            with self._path(key).open("rb") as handle:
                while chunk := handle.read(UPLOAD_FOLDER_WRITE_BYTES):
                    crc = crc32(chunk, crc)
            return crc & 0xFFFFFFFF

        return await asyncio.to_thread(read)

    async def place(
        self, key: str, final_key: str, *, upload_id: str, content_type: str, size: int, taken_at: float
    ) -> Placed | None:
        staged = self._path(key)
        target = self.source.root / final_key

        def link() -> bool:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.utime(staged, (taken_at, taken_at))  # the member's date in archives
                os.link(staged, target)
                return True
            except FileExistsError:
                return _same_file(staged, target)
            except FileNotFoundError:
                raise UploadIncomplete("nothing has been uploaded for this upload yet") from None
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            # Another filesystem: copy beside the target, then link (still never replacing).
            beside = target.parent / f".{target.name}.{upload_id}.part"
            shutil.copy2(staged, beside)
            try:
                os.link(beside, target)
                return True
            except FileExistsError:
                return False
            finally:
                beside.unlink(missing_ok=True)

        try:
            ours = await asyncio.to_thread(link)
        except OSError as exc:
            raise SourceUnavailable(f"cannot file {final_key!r}: {exc.strerror}") from exc
        if not ours:
            return None
        info = await self.source.stat(final_key)
        return Placed(key=final_key, etag=info.etag, size=info.size, mtime=info.mtime)

    async def delete(self, key: str) -> None:
        def remove() -> None:
            self._path(key).unlink(missing_ok=True)
            for part in self.root.glob(f".{key}.*.part"):
                part.unlink(missing_ok=True)

        await asyncio.to_thread(remove)

    async def check(self) -> None:
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise DependencyUnavailable(f"upload staging folder {self.root}: {exc.strerror}") from exc


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        sa, sb = a.stat(), b.stat()
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
    return False


async def _write(handle: object, body: AsyncIterator[bytes], size: int) -> int:
    """Write `body`, buffered to a few writes; raise `UploadMismatch` as soon as it is
    longer than `size`, or at the end when it is shorter. Its CRC-32."""
    write = handle.write  # type: ignore[attr-defined]
    crc, received = 0, 0
    buffer: list[bytes] = []
    buffered = 0
    async for chunk in body:
        received += len(chunk)
        if received > size:
            raise UploadMismatch(f"the body is longer than the {size} bytes announced")
        crc = crc32(chunk, crc)
        buffer.append(chunk)
        buffered += len(chunk)
        if buffered >= UPLOAD_FOLDER_WRITE_BYTES:
            await asyncio.to_thread(write, b"".join(buffer))
            buffer, buffered = [], 0
    if received != size:
        raise UploadMismatch(f"the body has {received} bytes, not the {size} announced")
    if buffer:
        await asyncio.to_thread(write, b"".join(buffer))
    return crc & 0xFFFFFFFF
