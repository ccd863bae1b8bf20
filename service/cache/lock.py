"""One builder per archive id: a non-blocking lease, renewed while the build runs.

An efficiency lock, not a correctness one: the cache object is content-addressed and
committed with `IfNoneMatch="*"`, so two builders can only ever publish the same bytes.
The lock just keeps N concurrent first requests from writing N copies.

Redis: redis-py's asyncio `Lock` (SET NX PX + token-checked Lua for renew and release),
`thread_local=False` because the lease is shared by tasks, a short TTL renewed every
third of it. If a renewal finds the lock gone (expired during a stall, Redis failover,
someone deleted it), the lease is marked lost and the builder drops its cache write.
In process (embedded default, no Redis): a set of held ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from redis import asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from service.constants import LOCK_TTL_S

logger = logging.getLogger(__name__)

#: Key prefix of build locks in Redis.
LOCK_PREFIX = "zipedge:build:"


class Lease(Protocol):
    """A held lock. `lost` is set if it stopped being ours before `release`."""

    lost: asyncio.Event

    async def confirm(self) -> bool:
        """Whether the lock is still ours right now (checked before publishing)."""
        ...

    async def release(self) -> None: ...


class BuildLock(Protocol):
    async def try_acquire(self, archive_id: str) -> Lease | None:
        """The lease if nobody holds the id, else None. Never waits; never raises."""
        ...


class _LocalLease:
    def __init__(self, owner: LocalBuildLock, archive_id: str) -> None:
        self._owner = owner
        self._archive_id = archive_id
        self.lost = asyncio.Event()

    async def confirm(self) -> bool:
        return self._archive_id in self._owner.held and not self.lost.is_set()

    async def release(self) -> None:
        self._owner.held.discard(self._archive_id)


class LocalBuildLock:
    def __init__(self) -> None:
        self.held: set[str] = set()

    async def try_acquire(self, archive_id: str) -> Lease | None:
        if archive_id in self.held:
            return None
        self.held.add(archive_id)
        return _LocalLease(self, archive_id)


class _RedisLease:
    def __init__(self, lock: Lock, renew_s: float) -> None:
        self._lock = lock
        self._renew_s = renew_s
        self.lost = asyncio.Event()
        self._renewal = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._renew_s)
            try:
                await self._lock.reacquire()
            except (LockError, RedisError, OSError) as exc:
                logger.warning("build lock %s lost: %s", self._lock.name, exc)
                self.lost.set()
                return

    async def confirm(self) -> bool:
        if self.lost.is_set():
            return False
        try:
            await self._lock.reacquire()
        except (LockError, RedisError, OSError) as exc:
            logger.warning("build lock %s lost: %s", self._lock.name, exc)
            self.lost.set()
            return False
        return True

    async def release(self) -> None:
        self._renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._renewal
        if self.lost.is_set():
            return
        try:
            await self._lock.release()
        except (LockError, RedisError, OSError) as exc:
            # Expired already, or Redis is away: the TTL cleans up either way.
            logger.info("build lock %s not released: %s", self._lock.name, exc)


class RedisBuildLock:
    def __init__(self, redis: aioredis.Redis, *, ttl_s: float = LOCK_TTL_S) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        # A third of the TTL: two renewals may be missed before the lock expires.
        self._renew_s = ttl_s / 3

    async def try_acquire(self, archive_id: str) -> Lease | None:
        lock = Lock(
            self._redis,
            LOCK_PREFIX + archive_id,
            timeout=self._ttl_s,
            blocking=False,
            thread_local=False,
            raise_on_release_error=False,
        )
        try:
            acquired = await lock.acquire(blocking=False)
        except (RedisError, OSError) as exc:
            # No coordination possible: stream without teeing rather than risk N copies.
            logger.warning("build lock unavailable (%s): streaming without cache write", exc)
            return None
        return _RedisLease(lock, self._renew_s) if acquired else None
