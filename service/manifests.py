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
from service.exceptions import DependencyUnavailable, UnknownArchive

#: Redis key prefix of stored manifests.
REDIS_PREFIX = "zipedge:manifest:"
#: How long a posted archive stays downloadable in Redis after its last POST (seconds).
REDIS_TTL_S = 30 * 24 * 3600


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


class MemoryManifestStore:
    def __init__(self) -> None:
        self._manifests: dict[str, bytes] = {}

    async def put(self, manifest: Manifest) -> None:
        self._manifests[manifest.archive_id] = manifest.to_json()

    async def get(self, archive_id: str) -> Manifest:
        blob = self._manifests.get(archive_id)
        if blob is None:
            raise _unknown(archive_id)
        return Manifest.from_json(blob)

    async def check(self) -> None:
        return None


class FolderManifestStore:
    """One JSON file per manifest, written atomically (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, archive_id: str) -> Path:
        return self.directory / archive_id[:2] / f"{archive_id}.json"

    def _put_sync(self, manifest: Manifest) -> None:
        path = self._path(manifest.archive_id)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(manifest.to_json())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def put(self, manifest: Manifest) -> None:
        with _io_errors("manifest folder"):
            await asyncio.to_thread(self._put_sync, manifest)

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)
        try:
            blob = await asyncio.to_thread(self._path(archive_id).read_bytes)
        except FileNotFoundError:
            raise _unknown(archive_id) from None
        except OSError as exc:
            raise DependencyUnavailable(f"manifest folder: {exc.strerror}") from exc
        try:
            return Manifest.from_json(blob)
        except ValueError:
            raise _unknown(archive_id) from None

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
        with _redis_errors():
            await self._redis.set(REDIS_PREFIX + manifest.archive_id, manifest.to_json(), ex=REDIS_TTL_S)

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)
        with _redis_errors():
            blob = await self._redis.get(REDIS_PREFIX + archive_id)
        if blob is None:
            raise _unknown(archive_id)
        try:
            return Manifest.from_json(blob if isinstance(blob, bytes) else blob.encode())
        except ValueError:
            raise _unknown(archive_id) from None

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
