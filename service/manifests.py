"""Where manifests are kept, so an archive's bytes can be made again from its id.

Two kinds, the same interface:

* posted archives (`put`): `GET /v1/archives/{id}.zip` works after a restart (folder, the
  embedded default) and from any process (Redis), for `ttl_s` after the last POST;
* layouts served by a live stream (`serve`): the manifest under its archive id, and which
  archive id a selection (a date range, a posted archive) was last served as, with the
  time it last became another one (`ServedLayout`). A download resumed or split into
  ranges then gets exactly the bytes its first part came from, even if the service has
  learned CRCs since (which gives the same objects a new layout), and fails honestly if
  one of its objects changed. Kept `SERVED_LAYOUT_TTL_S`.

A manifest is immutable and content-addressed, so writes are idempotent and need no lock.
Beside a posted one the store records who posted it (`owned_by`: an id is a content hash,
so anyone who names the same objects can compute it; only its owners may use it), and
counts each client's stored archives against a quota of count and bytes (`ManifestQuota`:
429 beyond, with the time until its oldest one expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.archive.manifest import Manifest, is_archive_id
from service.archive.served import ServedLayout
from service.constants import (
    MANIFEST_INLINE_JSON_BYTES,
    SERVED_LAYOUT_PRUNE_S,
    SERVED_LAYOUT_TTL_S,
)
from service.exceptions import DependencyUnavailable, UnknownArchive
from service.identity import Caller
from service.manifest_quota import LocalQuotaBooks, ManifestQuota
from service.offloop import in_worker

#: Redis key prefixes of stored manifests and of the layout each set of objects was served
#: as; of the owners of posted ones, and of each client's stored archives (a sorted set of
#: ids by expiry, and a hash of their sizes).
REDIS_PREFIX = "zipedge:manifest:"
REDIS_SERVED_PREFIX = "zipedge:served:"
OWNERS_PREFIX = "zipedge:manifest-owners:"
CLIENT_PREFIX = "zipedge:manifests:client:"
SIZES_PREFIX = "zipedge:manifests:sizes:"


class ManifestStore(Protocol):
    async def put(self, manifest: Manifest, owner: Caller | None = None) -> None:
        """Keep a posted archive's manifest; with `owner`, record it as theirs and count it
        against the quota of its client (`RateLimited` beyond). Without: a job's, for workers."""
        ...

    async def owned_by(self, archive_id: str, sub: str) -> bool:
        """Whether `sub` posted this archive (and it has not expired)."""
        ...

    async def get(self, archive_id: str) -> Manifest:
        """The manifest, or `UnknownArchive`."""
        ...

    async def serve(self, selection: str, manifest: Manifest, *also: str) -> None:
        """A live stream is sending `manifest` for `selection` (a stable key of what was
        asked for): keep it, and remember it as that selection's layout, and as the layout
        of each of `also` (the manifest is stored once)."""
        ...

    async def served(self, selection: str) -> ServedLayout | None:
        """What `selection` was last served as, if still remembered."""
        ...

    async def check(self) -> None:
        """Raise `DependencyUnavailable` when the store cannot be reached."""
        ...


def _selection_id(selection: str) -> str:
    """A short file- and key-safe name for a selection key."""
    return hashlib.sha256(selection.encode("utf-8")).hexdigest()[:32]


def _unknown(archive_id: str) -> UnknownArchive:
    return UnknownArchive(f"no archive {archive_id!r}")


async def _decode(blob: bytes, archive_id: str) -> Manifest:
    """Parse a stored manifest; in a worker thread when large (a 100,000-entry manifest is
    ~5 MB of JSON and would hold the event loop for a quarter second)."""
    try:
        if len(blob) <= MANIFEST_INLINE_JSON_BYTES:
            return Manifest.from_json(blob)
        return await in_worker(lambda: Manifest.from_json(blob))
    except (ValueError, KeyError, TypeError):
        raise _unknown(archive_id) from None


async def _encode(manifest: Manifest) -> bytes:
    if len(manifest.entries) <= MANIFEST_INLINE_JSON_BYTES // 256:
        return manifest.to_json()
    return await in_worker(manifest.to_json)


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
    with their owners in a file beside them, expired `ttl_s` after their file was last
    written; served layouts under `layouts/` and `served/`, pruned after
    `SERVED_LAYOUT_TTL_S`."""

    def __init__(self, directory: Path, quota: ManifestQuota | None = None) -> None:
        self.directory = directory
        self._pruned_at = 0.0
        self._quota = quota or ManifestQuota()
        self._books = LocalQuotaBooks(self._quota)
        self._served_lock = threading.Lock()

    def _path(self, archive_id: str, kind: str = "") -> Path:
        base = self.directory / kind if kind else self.directory
        return base / archive_id[:2] / f"{archive_id}.json"

    def _served_path(self, selection: str) -> Path:
        name = _selection_id(selection)
        return self.directory / "served" / name[:2] / name

    def _put_sync(self, path: Path, blob: bytes, owner: str | None) -> None:
        if owner is not None:
            owners = path.with_suffix(".owners")
            if owner not in (owners.read_text().splitlines() if owners.exists() else []):
                path.parent.mkdir(parents=True, exist_ok=True)
                with owners.open("a") as handle:
                    handle.write(owner + "\n")
        if path.exists():
            os.utime(path)  # posted again: kept for another ttl_s
        else:
            _write_atomically(path, blob)

    async def put(self, manifest: Manifest, owner: Caller | None = None) -> None:
        blob = await _encode(manifest)
        if owner is not None:
            self._quota.check_size(len(blob))
            self._books.claim(owner.client_id, manifest.archive_id, len(blob))
        with _io_errors("manifest folder"):
            await asyncio.to_thread(
                self._put_sync,
                self._path(manifest.archive_id),
                blob,
                owner.sub if owner is not None else None,
            )

    async def owned_by(self, archive_id: str, sub: str) -> bool:
        if not is_archive_id(archive_id):
            return False
        path = self._path(archive_id)

        def read() -> str:
            # Expired, nobody owns it, as with Redis: its manifest may outlive it only as a
            # served layout (kept for resumes), which `get` still finds.
            if path.stat().st_mtime < time.time() - self._quota.ttl_s:
                return ""
            return path.with_suffix(".owners").read_text()

        try:
            text = await asyncio.to_thread(read)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DependencyUnavailable(f"manifest folder: {exc.strerror}") from exc
        return sub in text.splitlines()

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)

        def read() -> bytes:
            try:
                with self._path(archive_id).open("rb") as handle:
                    if os.fstat(handle.fileno()).st_mtime >= time.time() - self._quota.ttl_s:
                        return handle.read()
            except FileNotFoundError:
                pass
            return self._path(archive_id, "layouts").read_bytes()

        try:
            blob = await asyncio.to_thread(read)
        except FileNotFoundError:
            raise _unknown(archive_id) from None
        except OSError as exc:
            raise DependencyUnavailable(f"manifest folder: {exc.strerror}") from exc
        return await _decode(blob, archive_id)

    async def serve(self, selection: str, manifest: Manifest, *also: str) -> None:
        blob = await _encode(manifest)

        def write() -> None:
            layout = self._path(manifest.archive_id, "layouts")
            if layout.exists():
                os.utime(layout)  # served again: kept longer
            else:
                _write_atomically(layout, blob)
            with self._served_lock:  # read, then write: one serve at a time
                now = time.time()
                for path in map(self._served_path, (selection, *also)):
                    before = self._served_sync(path, now)
                    record = (
                        before.after(manifest.archive_id, now)
                        if before
                        else ServedLayout(manifest.archive_id)
                    )
                    _write_atomically(path, record.encode().encode())
            self._prune()

        with _io_errors("manifest folder"):
            await asyncio.to_thread(write)

    @staticmethod
    def _served_sync(path: Path, now: float) -> ServedLayout | None:
        try:
            if now - path.stat().st_mtime > SERVED_LAYOUT_TTL_S:
                return None
            return ServedLayout.decode(path.read_text(encoding="ascii"))
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    async def served(self, selection: str) -> ServedLayout | None:
        with _io_errors("manifest folder"):
            return await asyncio.to_thread(self._served_sync, self._served_path(selection), time.time())

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


#: Count one archive against a client's quota (server clock, ms): 0 when it fits (or is
#: already counted), else the milliseconds until the client's oldest archive expires.
_CLAIM = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[1])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
end
if not redis.call('ZSCORE', KEYS[1], ARGV[4]) then
    local total = tonumber(ARGV[5])
    for _, size in ipairs(redis.call('HVALS', KEYS[2])) do total = total + tonumber(size) end
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) or total > tonumber(ARGV[3]) then
        local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        return math.max(1, tonumber(oldest[2]) - now)
    end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 0
"""


#: Record the layout each of KEYS is served as (`ServedLayout.encode`), in one step so
#: that processes serving it at once cannot lose a switch: ARGV = archive id, TTL (s), now.
_SERVE = """
for _, key in ipairs(KEYS) do
    local before = redis.call('GET', key)
    local value = ARGV[1]
    if before then
        local current, switched = string.match(before, '^(%S+) ?(%S*)$')
        if current ~= ARGV[1] then
            value = ARGV[1] .. ' ' .. ARGV[3]
        elseif switched and switched ~= '' then
            value = ARGV[1] .. ' ' .. switched
        end
    end
    redis.call('SET', key, value, 'EX', ARGV[2])
end
return 1
"""


class RedisManifestStore:
    def __init__(self, redis: aioredis.Redis, quota: ManifestQuota | None = None) -> None:
        self._redis = redis
        self._quota = quota or ManifestQuota()
        self._claim: Any = redis.register_script(_CLAIM)
        self._serve: Any = redis.register_script(_SERVE)

    async def put(self, manifest: Manifest, owner: Caller | None = None) -> None:
        blob = await _encode(manifest)
        archive_id, ttl_s = manifest.archive_id, self._quota.ttl_s
        with _redis_errors():
            if owner is not None:
                self._quota.check_size(len(blob))
                client = owner.client_id
                wait_ms = await self._claim(
                    keys=[CLIENT_PREFIX + client, SIZES_PREFIX + client],
                    args=[ttl_s * 1000, self._quota.max_count, self._quota.max_bytes, archive_id, len(blob)],
                )
                if wait_ms:
                    raise self._quota.refuse(int(wait_ms) / 1000)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(REDIS_PREFIX + archive_id, blob, ex=ttl_s)
                if owner is not None:
                    pipe.sadd(OWNERS_PREFIX + archive_id, owner.sub)
                    pipe.expire(OWNERS_PREFIX + archive_id, ttl_s)
                await pipe.execute()

    async def owned_by(self, archive_id: str, sub: str) -> bool:
        with _redis_errors():
            return bool(await self._redis.sismember(OWNERS_PREFIX + archive_id, sub))

    async def get(self, archive_id: str) -> Manifest:
        if not is_archive_id(archive_id):
            raise _unknown(archive_id)
        with _redis_errors():
            blob = await self._redis.get(REDIS_PREFIX + archive_id)
        if blob is None:
            raise _unknown(archive_id)
        return await _decode(blob if isinstance(blob, bytes) else blob.encode(), archive_id)

    async def serve(self, selection: str, manifest: Manifest, *also: str) -> None:
        key = REDIS_PREFIX + manifest.archive_id
        with _redis_errors():
            # A posted manifest keeps its own, longer lifetime (never shortened here).
            if not await self._redis.expire(
                key, SERVED_LAYOUT_TTL_S, gt=True
            ) and not await self._redis.exists(key):
                await self._redis.set(key, await _encode(manifest), ex=SERVED_LAYOUT_TTL_S, nx=True)
            await self._serve(
                keys=[REDIS_SERVED_PREFIX + _selection_id(name) for name in (selection, *also)],
                args=[manifest.archive_id, SERVED_LAYOUT_TTL_S, f"{time.time():.3f}"],
            )

    async def served(self, selection: str) -> ServedLayout | None:
        with _redis_errors():
            found = await self._redis.get(REDIS_SERVED_PREFIX + _selection_id(selection))
        if found is None:
            return None
        return ServedLayout.decode(found.decode() if isinstance(found, bytes) else str(found))

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
