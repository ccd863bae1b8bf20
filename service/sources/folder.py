"""A local folder as the date-partitioned root: the embedded default.

Safe against escaping the root: keys are validated by the name policy, every path is
resolved and must stay inside the (resolved) root, so a symlink pointing outside is
treated as absent. Blocking filesystem calls run in a worker thread, batched so that a
small photo costs one thread hop to open and read, not one per syscall.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from service.archive.names import validate_key
from service.constants import READ_CHUNK_BYTES
from service.exceptions import (
    DependencyUnavailable,
    InvalidKey,
    ObjectChanged,
    ObjectMissing,
    ObjectNotFound,
    SourceUnavailable,
)
from service.sources.base import ObjectInfo, listable


def _etag(st: os.stat_result) -> str:
    # Changes whenever the file is rewritten (new inode or mtime) or resized.
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def _close_opened(opening: asyncio.Future[tuple[BinaryIO, bytes]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()


class FolderSource:
    def __init__(self, root: Path, *, hidden: str = "") -> None:
        self.root = root.resolve()
        #: keys under this prefix (pending uploads) are not objects of the source
        self.hidden = hidden

    def _path(self, key: str) -> Path:
        validate_key(key)
        if self.hidden and key.startswith(self.hidden):
            raise InvalidKey(f"key {key!r} is a pending upload, not an object of the source")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey(f"key {key!r} leaves the source root")
        return path

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key=key, size=st.st_size, etag=_etag(st), mtime=int(st.st_mtime))

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix
        if not base.is_dir() or not base.resolve().is_relative_to(self.root):
            return []
        found: list[ObjectInfo] = []
        # Iterative scandir: a directory entry says whether it is a link or a file without
        # a syscall, so only symlinks are resolved (os.walk does not follow linked
        # folders, and a real folder under the resolved base is inside the root).
        pending = [(os.fspath(base), prefix.rstrip("/"))]
        while pending:
            folder, relative = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # vanished while listing
            for entry in entries:
                # Hidden entries (".DS_Store", editors' temp files, in-flight writes) are
                # never photos of the selection.
                if entry.name.startswith("."):
                    continue
                key = f"{relative}/{entry.name}" if relative else entry.name
                try:
                    if entry.is_symlink():
                        real = Path(entry.path).resolve()
                        if not real.is_relative_to(self.root) or not real.is_file():
                            continue
                        st = real.stat()
                    elif entry.is_dir(follow_symlinks=False):
                        pending.append((entry.path, key))
                        continue
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                    else:
                        continue
                except OSError:
                    continue  # vanished while listing
                if listable(key, where=str(self.root)):  # the same rule `read` applies
                    found.append(self._info(key, st))
        found.sort(key=lambda info: info.key)
        return found

    async def list(self, prefix: str) -> list[ObjectInfo]:
        try:
            return await asyncio.to_thread(self._list_sync, prefix)
        except OSError as exc:
            raise SourceUnavailable(f"cannot list {prefix!r}: {exc.strerror}") from exc

    def _stat_sync(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object {key!r}") from exc
        except OSError as exc:
            raise SourceUnavailable(f"cannot stat {key!r}: {exc.strerror}") from exc
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r}")
        return self._info(key, st)

    async def stat(self, key: str) -> ObjectInfo:
        return await asyncio.to_thread(self._stat_sync, key)

    def _open_sync(self, key: str, offset: int, etag: str, first: int) -> tuple[BinaryIO, bytes]:
        try:
            path = self._path(key)
            handle = path.open("rb")
        except (InvalidKey, FileNotFoundError) as exc:
            raise ObjectMissing(f"object {key!r} is gone") from exc
        except OSError as exc:
            raise SourceUnavailable(f"cannot open {key!r}: {exc.strerror}") from exc
        try:
            if etag and _etag(os.fstat(handle.fileno())) != etag:
                raise ObjectChanged(f"object {key!r} changed since the archive was listed")
            handle.seek(offset)
            return handle, handle.read(first)
        except BaseException:
            handle.close()
            raise

    async def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncIterator[bytes]:
        left = -1 if length is None else length  # -1: to the end
        first = READ_CHUNK_BYTES if left < 0 else min(READ_CHUNK_BYTES, left)
        opening = asyncio.ensure_future(asyncio.to_thread(self._open_sync, key, offset, etag, first))
        try:
            handle, chunk = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread finishes the open regardless; close what it opens.
            opening.add_done_callback(_close_opened)
            raise
        try:
            while chunk:
                yield chunk
                if left >= 0:
                    left -= len(chunk)
                    if left <= 0:
                        return
                want = READ_CHUNK_BYTES if left < 0 else min(READ_CHUNK_BYTES, left)
                try:
                    chunk = await asyncio.to_thread(handle.read, want)
                except OSError as exc:
                    raise SourceUnavailable(f"cannot read {key!r}: {exc.strerror}") from exc
        finally:
            handle.close()

    async def check(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            raise DependencyUnavailable(f"source folder {self.root} does not exist")

    async def aclose(self) -> None:
        return None
