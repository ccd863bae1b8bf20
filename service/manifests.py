"""Where the manifests of posted archives are kept, so `GET /v1/archives/{id}.zip` works
after a restart (folder, the embedded default) and from any process (Redis).

A manifest is immutable and content-addressed, so writes are idempotent and need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.archive.manifest import Manifest, is_archive_id
from service.constants import MANIFEST_INLINE_JSON_BYTES, MANIFEST_REDIS_TTL_S
from service.exceptions import DependencyUnavailable, UnknownArchive

#: Redis key prefix of stored manifests.
REDIS_PREFIX = "zipedge:manifest:"


class ManifestStore(Protocol):
    async def put(self, manifest: Manifest) -> None: ...

    async def get(self, archive_id: str) -> Manifest:
        """The manifest, or `UnknownArchive`."""
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


class FolderManifestStore:
    """One JSON file per manifest, written atomically (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, archive_id: str) -> Path:
        return self.directory / archive_id[:2] / f"{archive_id}.json"

    def _put_sync(self, archive_id: str, blob: bytes) -> None:
        path = self._path(archive_id)
        if path.exists():
            return
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

    async def put(self, manifest: Manifest) -> None:
        blob = await _encode(manifest)
        with _io_errors("manifest folder"):
            await asyncio.to_thread(self._put_sync, manifest.archive_id, blob)

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)
        try:
            blob = await asyncio.to_thread(self._path(archive_id).read_bytes)
        except FileNotFoundError:
            raise _unknown(archive_id) from None
        except OSError as exc:
            raise DependencyUnavailable(f"manifest folder: {exc.strerror}") from exc
        return await _decode(blob, archive_id)

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
