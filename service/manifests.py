"""Where manifests are kept, so an archive's bytes can be made again from its id.

Two kinds, the same interface:

* posted archives (`put`): `GET /v1/archives/{id}.zip` works after a restart (folder, the
  embedded default) and from any process (Redis), for `MANIFEST_REDIS_TTL_S`;
* layouts served by a live stream (`serve`): the manifest under its archive id, and which
  archive id the objects were last served as. A download resumed or split into ranges
  then gets exactly the bytes its first part came from, even if the service has learned
  CRCs since (which would give the same objects a new layout). Kept `SERVED_LAYOUT_TTL_S`.

A manifest is immutable and content-addressed, so writes are idempotent and need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.archive.manifest import Manifest, is_archive_id
from service.constants import (
    MANIFEST_INLINE_JSON_BYTES,
    MANIFEST_REDIS_TTL_S,
    SERVED_LAYOUT_PRUNE_S,
    SERVED_LAYOUT_TTL_S,
)
from service.exceptions import DependencyUnavailable, UnknownArchive

#: Redis key prefixes of stored manifests and of the layout each set of objects was served as.
REDIS_PREFIX = "zipedge:manifest:"
REDIS_SERVED_PREFIX = "zipedge:served:"


class ManifestStore(Protocol):
    async def put(self, manifest: Manifest) -> None:
        """Keep a posted archive's manifest."""
        ...

    async def get(self, archive_id: str) -> Manifest:
        """The manifest, or `UnknownArchive`."""
        ...

    async def serve(self, manifest: Manifest) -> None:
        """A live stream is sending `manifest`: keep it, and remember it as the layout its
        objects are served as."""
        ...

    async def served(self, objects_id: str) -> str | None:
        """The archive id these objects were last served as, if still remembered."""
        ...

    async def check(self) -> None:
        """Raise `DependencyUnavailable` when the store cannot be reached."""
        ...


def _unknown(archive_id: str) -> UnknownArchive:
    return UnknownArchive(f"no archive {archive_id!r}")


async def _decode(blob: bytes, archive_id: str) -> Manifest:
    """Parse a stored manifest; in a worker thread when large (a 100,000-entry manifest is
    ~5 MB of JSON and would hold the event loop for a quarter second)."""
    try:
        if len(blob) <= MANIFEST_INLINE_JSON_BYTES:
            return Manifest.from_json(blob)
        return await asyncio.to_thread(Manifest.from_json, blob)
    except (ValueError, KeyError, TypeError):
        raise _unknown(archive_id) from None


async def _encode(manifest: Manifest) -> bytes:
    if len(manifest.entries) <= MANIFEST_INLINE_JSON_BYTES // 256:
        return manifest.to_json()
    return await asyncio.to_thread(manifest.to_json)


def _write_atomically(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FolderManifestStore:
    """One JSON file per manifest, written atomically (temp file + rename): posted ones
    kept as long as the folder, served layouts under `layouts/` and `served/`, pruned
    after `SERVED_LAYOUT_TTL_S`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pruned_at = 0.0

    def _path(self, archive_id: str, kind: str = "") -> Path:
        base = self.directory / kind if kind else self.directory
        return base / archive_id[:2] / f"{archive_id}.json"

    def _served_path(self, objects_id: str) -> Path:
        return self.directory / "served" / objects_id[:2] / objects_id

    def _put_sync(self, path: Path, blob: bytes) -> None:
        if not path.exists():
            _write_atomically(path, blob)

    async def put(self, manifest: Manifest) -> None:
        blob = await _encode(manifest)
        with _io_errors("manifest folder"):
            await asyncio.to_thread(self._put_sync, self._path(manifest.archive_id), blob)

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)

        def read() -> bytes:
            try:
                return self._path(archive_id).read_bytes()
            except FileNotFoundError:
                return self._path(archive_id, "layouts").read_bytes()

        try:
            blob = await asyncio.to_thread(read)
        except FileNotFoundError:
            raise _unknown(archive_id) from None
        except OSError as exc:
            raise DependencyUnavailable(f"manifest folder: {exc.strerror}") from exc
        return await _decode(blob, archive_id)

    async def serve(self, manifest: Manifest) -> None:
        blob = await _encode(manifest)

        def write() -> None:
            layout = self._path(manifest.archive_id, "layouts")
            if layout.exists():
                os.utime(layout)  # served again: kept longer
            else:
                _write_atomically(layout, blob)
            _write_atomically(self._served_path(manifest.objects_id), manifest.archive_id.encode())
            self._prune()

        with _io_errors("manifest folder"):
            await asyncio.to_thread(write)

    async def served(self, objects_id: str) -> str | None:
        def read() -> str | None:
            path = self._served_path(objects_id)
            try:
                if time.time() - path.stat().st_mtime > SERVED_LAYOUT_TTL_S:
                    return None
                return path.read_text(encoding="ascii").strip() or None
            except (FileNotFoundError, UnicodeDecodeError):
                return None

        if not is_archive_id(objects_id):
            return None
        with _io_errors("manifest folder"):
            return await asyncio.to_thread(read)

    def _prune(self) -> None:
        """Served layouts older than their lifetime go, at most once per prune interval."""
        now = time.time()
        if now - self._pruned_at < SERVED_LAYOUT_PRUNE_S:
            return
        self._pruned_at = now
        for folder in (self.directory / "layouts", self.directory / "served"):
            for path in folder.glob("*/*") if folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > SERVED_LAYOUT_TTL_S:
                        path.unlink()

    async def check(self) -> None:
        def writable() -> bool:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.access(self.directory, os.W_OK)

        with _io_errors("manifest folder"):
            if not await asyncio.to_thread(writable):
                raise DependencyUnavailable(f"manifest folder {self.directory} is not writable")


class RedisManifestStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def put(self, manifest: Manifest) -> None:
        blob = await _encode(manifest)
        with _redis_errors():
            await self._redis.set(REDIS_PREFIX + manifest.archive_id, blob, ex=MANIFEST_REDIS_TTL_S)

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)
        with _redis_errors():
            blob = await self._redis.get(REDIS_PREFIX + archive_id)
        if blob is None:
            raise _unknown(archive_id)
        return await _decode(blob if isinstance(blob, bytes) else blob.encode(), archive_id)

    async def serve(self, manifest: Manifest) -> None:
        key = REDIS_PREFIX + manifest.archive_id
        with _redis_errors():
            # A posted manifest keeps its own, longer lifetime (never shortened here).
            if not await self._redis.expire(
                key, SERVED_LAYOUT_TTL_S, gt=True
            ) and not await self._redis.exists(key):
                await self._redis.set(key, await _encode(manifest), ex=SERVED_LAYOUT_TTL_S, nx=True)
            await self._redis.set(
                REDIS_SERVED_PREFIX + manifest.objects_id, manifest.archive_id, ex=SERVED_LAYOUT_TTL_S
            )

    async def served(self, objects_id: str) -> str | None:
        with _redis_errors():
            found = await self._redis.get(REDIS_SERVED_PREFIX + objects_id)
        if found is None:
            return None
        text = found.decode() if isinstance(found, bytes) else str(found)
        return text if is_archive_id(text) else None

    async def check(self) -> None:
        with _redis_errors():
            await self._redis.ping()


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        raise DependencyUnavailable(f"redis: {exc}") from exc


@contextlib.contextmanager
def _io_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise DependencyUnavailable(f"{what}: {exc.strerror or exc}") from exc
