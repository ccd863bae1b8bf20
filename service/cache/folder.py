"""Cache objects in a folder: the embedded default, served by the service itself.

`<dir>/<objects id>.zip`, written to a temp file and published with `link()` (which fails
if the name exists: the first writer wins, atomically), beside `<objects id>.json` naming
the layout it holds (its archive id, the ETag) and its download name; the JSON is written
first, so a published archive always has one. The file's mtime is set to the newest
member's, so a cached download answers with the `Last-Modified` the live stream sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from service.cache.base import CachedArchive, CacheEntry, CacheWriter, settle
from service.constants import CACHE_FOLDER_WRITE_BYTES, CACHE_PARTS_IN_FLIGHT
from service.exceptions import CacheWriteFailed, DependencyUnavailable

#: Pieces one writev may take (POSIX guarantees 16; Linux takes 1,024).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class FolderCacheWriter:
    def __init__(self, directory: Path, entry: CacheEntry) -> None:
        self._directory = directory
        self._final = directory / f"{entry.objects_id}.zip"
        self._record = directory / f"{entry.objects_id}.json"
        self._entry = entry
        self._written = 0
        # The chunks since the last write, handed to writev as they are: gathering them
        # into one buffer first copied every byte twice (~15 % of a job worker's CPU).
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._fd = -1
        self._tmp = ""
        self._done = False

    async def start(self) -> None:
        def open_tmp() -> tuple[int, str]:
            self._directory.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(dir=self._directory, prefix=".partial-", suffix=".zip")

        opening = asyncio.ensure_future(asyncio.to_thread(open_tmp))
        try:
            self._fd, self._tmp = await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                fd, tmp = opening.result()
                os.close(fd)
                os.unlink(tmp)
            raise
        except OSError as exc:
            raise CacheWriteFailed(f"cache folder: {exc.strerror}") from exc

    async def write(self, chunk: bytes) -> None:
        self._written += len(chunk)
        if self._written > self._entry.size:
            raise CacheWriteFailed(f"more than the promised {self._entry.size} bytes")
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= CACHE_FOLDER_WRITE_BYTES:
            pieces, self._pending, self._pending_bytes = self._pending, [], 0
            try:
                await asyncio.to_thread(write_all, self._fd, pieces)
            except OSError as exc:
                raise CacheWriteFailed(f"cache folder: {exc.strerror}") from exc

    async def commit(self) -> bool:
        try:
            if self._written != self._entry.size:
                raise CacheWriteFailed(f"wrote {self._written} bytes, promised {self._entry.size}")

            def publish() -> bool:
                write_all(self._fd, self._pending)
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1
                mtime = self._entry.last_modified
                os.utime(self._tmp, (mtime, mtime))
                if not self._final.exists():
                    _write_record(self._record, self._entry)
                try:
                    os.link(self._tmp, self._final)  # fails if it exists: first writer wins
                    return True
                except FileExistsError:
                    return False
                finally:
                    os.unlink(self._tmp)

            published = await asyncio.to_thread(publish)
            self._done = True
            return published
        except OSError as exc:
            await self.abort()
            raise CacheWriteFailed(f"cache folder: {exc}") from exc
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True

        def discard() -> None:
            if self._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = -1
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)

        await settle(asyncio.to_thread(discard))


def write_all(fd: int, pieces: list[bytes]) -> None:
    """Every piece to `fd`, in order, in as few system calls as writev takes them."""
    views = [memoryview(piece) for piece in pieces if piece]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        done = 0
        while done < len(views) and written >= len(views[done]):
            written -= len(views[done])
            done += 1
        del views[:done]
        if written:  # a short write ended inside this piece
            views[0] = views[0][written:]


def _write_record(path: Path, entry: CacheEntry) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".record-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"archive_id": entry.archive_id, "filename": entry.filename}, handle)
    os.replace(tmp, path)


class FolderArchiveCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, objects_id: str) -> Path:
        return self.directory / f"{objects_id}.zip"

    def _lookup_sync(self, objects_id: str) -> CachedArchive | None:
        try:
            st = self.path(objects_id).stat()
        except FileNotFoundError:
            return None
        try:
            record = json.loads((self.directory / f"{objects_id}.json").read_text(encoding="utf-8"))
            layout = str(record["archive_id"])
        except (OSError, ValueError, KeyError, TypeError):
            layout = objects_id  # written by hand, or its record lost: still the bytes
        return CachedArchive(objects_id, layout, st.st_size)

    async def lookup(self, objects_id: str) -> CachedArchive | None:
        try:
            return await asyncio.to_thread(self._lookup_sync, objects_id)
        except OSError as exc:
            raise DependencyUnavailable(f"cache folder: {exc.strerror}") from exc

    async def writer(self, entry: CacheEntry, *, parts_in_flight: int = CACHE_PARTS_IN_FLIGHT) -> CacheWriter:
        writer = FolderCacheWriter(self.directory, entry)
        await writer.start()
        return writer

    async def url(self, objects_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        return f"{base_url.rstrip('/')}/v1/cache/{objects_id}.zip?filename={quote(filename)}"

    async def served_file(self, objects_id: str) -> tuple[Path, CachedArchive] | None:
        found = await self.lookup(objects_id)
        return None if found is None else (self.path(objects_id), found)

    async def check(self) -> None:
        def writable() -> bool:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.access(self.directory, os.W_OK)

        try:
            ok = await asyncio.to_thread(writable)
        except OSError as exc:
            raise DependencyUnavailable(f"cache folder: {exc.strerror}") from exc
        if not ok:
            raise DependencyUnavailable(f"cache folder {self.directory} is not writable")
