"""Per-client rate limits and the concurrent-stream quota.

A client is `Caller.client_id`: a token's `sub`, else the client address. Rate limits
(ZIPEDGE_RATE_LIMITS, one per action) are the `limits` library's moving windows, kept in
Redis when ZIPEDGE_REDIS_URL is set (every process counts together) and in memory
otherwise; over a limit is `RateLimited` with the seconds until the window lets one more
through. With Redis, a client that keeps a process busy takes its hits in small batches
(leases: at most a tenth of the limit, as many as it used in the last interval, kept
`LIMITER_LEASE_S`), so a burst costs one Redis call per batch instead of one per request,
while a client asking now and then is counted exactly.

Live streams (ZIPEDGE_MAX_STREAMS_PER_CLIENT) are slots: in Redis a sorted set per client
whose members expire unless their process renews them, so a crashed process gives its
slots back within `STREAM_SLOT_TTL_S`.

The quotas of unfinished jobs and stored archives live with what they count
(`service/jobs/`, `service/manifests.py`).

A limiter whose Redis fails lets requests through (logged) for a few seconds, then asks
again: an outage must not stop downloads that need no Redis, nor make each request wait for
a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.constants import (
    LIMITER_LEASE_FRACTION,
    LIMITER_LEASE_MAX,
    LIMITER_LEASE_S,
    LIMITER_RETRY_AFTER_S,
    RETRY_AFTER_BUSY_S,
    STREAM_SLOT_TTL_S,
)
from service.exceptions import RateLimited
from service.settings import LimitSettings

logger = logging.getLogger(__name__)

#: Redis key prefixes: the limiter's windows, and each client's live-stream slots.
LIMITS_PREFIX = "zipedge:limits"
SLOTS_PREFIX = "zipedge:streams:"

#: Take a slot if the client holds fewer than ARGV[2] live ones (server clock, ms).
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: Push the expiry of this process's slots (pairs of key, member in KEYS / ARGV[2..]).
_RENEW = """
local t = redis.call('TIME')
local expiry = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
    redis.call('PEXPIRE', key, ARGV[1])
end
return 0
"""

_STORAGE_ERRORS = (RedisError, OSError, StorageError)

#: Leases remembered before the stale ones are dropped (count; a few bytes each).
LEASES_KEPT = 10_000


def _storage_uri(redis_url: str) -> str:
    scheme, _, rest = redis_url.partition("://")
    return f"async+{'redis+unix' if scheme == 'unix' else scheme}://{rest}"


@dataclass(slots=True)
class _Lease:
    """Hits of one (action, client) taken from the shared window, not used yet."""

    batch: int  #: hits taken
    until: float  #: monotonic
    used: int = 1  #: hits served from it


class Slot:
    """One live stream of one client; `release` gives it back (idempotent)."""

    def __init__(self, quotas: Quotas, client: str, member: str) -> None:
        self._quotas, self.client, self.member = quotas, client, member
        self._released = False

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._quotas._release(self)


class Quotas:
    def __init__(
        self, settings: LimitSettings, redis: aioredis.Redis | None = None, *, redis_url: str = ""
    ) -> None:
        self._items: dict[str, RateLimitItem] = {action: parse(text) for action, text in settings.rate_limits}
        self._max_streams = settings.max_streams_per_client
        self._redis = redis
        storage: Storage
        if redis is not None and redis_url:
            storage = RedisStorage(
                _storage_uri(redis_url),
                implementation="redispy",
                key_prefix=LIMITS_PREFIX,
                # the service's own pool: its timeouts and retry, no extra connections
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]
            )
        else:
            storage = MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._skip_until = 0.0
        self._leases: dict[tuple[str, str], _Lease] | None = {} if redis is not None else None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Live streams: counts here without Redis; with Redis, the slots this process renews.
        self._counts: dict[str, int] = {}
        self._held: dict[str, Slot] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._acquire: Any = redis.register_script(_ACQUIRE) if redis is not None else None
        self._renew: Any = redis.register_script(_RENEW) if redis is not None else None

    def limited(self, action: str) -> bool:
        return action in self._items

    # --- rate limits ---------------------------------------------------------------------

    async def hit(self, action: str, client: str) -> None:
        """Count one `action` of `client`; `RateLimited` when over its limit."""
        item = self._items.get(action)
        if item is None or time.monotonic() < self._skip_until:
            return
        if self._leases is None:  # in memory: every hit counted where it happens
            await self._take(item, action, client, 1)
            return
        key = (action, client)
        if self._use_lease(key):
            return
        # One refill at a time per client: its concurrent requests share the batch.
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._use_lease(key):
                return
            now = time.monotonic()
            lease = self._leases.get(key)
            batch = 1
            if lease is not None:
                # Used up in time: twice as many next; else as many as were used, if recent.
                recent = now < lease.until + LIMITER_LEASE_S
                wanted = 2 * lease.batch if now < lease.until else lease.used if recent else 1
                batch = max(1, min(wanted, item.amount // LIMITER_LEASE_FRACTION, LIMITER_LEASE_MAX))
            taken = await self._take(item, action, client, batch)
            if taken:
                self._lease(key, taken, now)

    def _use_lease(self, key: tuple[str, str]) -> bool:
        assert self._leases is not None
        lease = self._leases.get(key)
        if lease is None or lease.used >= lease.batch or time.monotonic() >= lease.until:
            return False
        lease.used += 1
        return True

    async def _take(self, item: RateLimitItem, action: str, client: str, batch: int) -> int:
        """Take `batch` hits (or, if only that fits, one) from the window: how many were
        taken (0: the storage failed, let it through); `RateLimited` when none fits."""
        try:
            if await self._limiter.hit(item, action, client, cost=batch):
                return batch
            if batch > 1 and await self._limiter.hit(item, action, client):
                return 1  # room for this one, not for a batch
            stats = await self._limiter.get_window_stats(item, action, client)
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return 0
        raise RateLimited(
            f"more than {item.amount} {action} requests per {_per(item)}: try again later",
            retry_after=stats.reset_time - time.time(),
        )

    def _lease(self, key: tuple[str, str], batch: int, now: float) -> None:
        leases = self._leases
        assert leases is not None
        if len(leases) > LEASES_KEPT:
            for stale in [k for k, v in leases.items() if v.until + LIMITER_LEASE_S < now]:
                del leases[stale]
                lock = self._locks.get(stale)
                if lock is not None and not lock.locked():
                    del self._locks[stale]
        leases[key] = _Lease(batch, now + LIMITER_LEASE_S)

    def _storage_failed(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + LIMITER_RETRY_AFTER_S
        logger.warning(
            "rate limits not applied for %g s: their storage failed: %s", LIMITER_RETRY_AFTER_S, exc
        )

    # --- live streams --------------------------------------------------------------------

    async def stream_slot(self, client: str) -> Slot:
        """A live-stream slot of `client`; `RateLimited` when it holds all it may."""
        slot = Slot(self, client, uuid.uuid4().hex)
        if self._redis is None or time.monotonic() < self._skip_until:
            held = self._counts.get(client, 0)
            if held >= self._max_streams:
                raise self._busy()
            self._counts[client] = held + 1
            slot.member = ""  # counted here, not in Redis
            return slot
        try:
            taken = await self._acquire(
                keys=[SLOTS_PREFIX + client], args=[STREAM_SLOT_TTL_S * 1000, self._max_streams, slot.member]
            )
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return await self.stream_slot(client)
        if not taken:
            raise self._busy()
        self._held[slot.member] = slot
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())
        return slot

    def _busy(self) -> RateLimited:
        return RateLimited(
            f"at most {self._max_streams} downloads at once per client: wait for one to finish",
            retry_after=RETRY_AFTER_BUSY_S,
        )

    async def _release(self, slot: Slot) -> None:
        if not slot.member:
            left = self._counts.get(slot.client, 1) - 1
            if left > 0:
                self._counts[slot.client] = left
            else:
                self._counts.pop(slot.client, None)
            return
        self._held.pop(slot.member, None)
        assert self._redis is not None
        try:
            await self._redis.zrem(SLOTS_PREFIX + slot.client, slot.member)
        except _STORAGE_ERRORS as exc:
            logger.info("stream slot of %s left to expire: %s", slot.client, exc)

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(STREAM_SLOT_TTL_S / 3)
            slots = list(self._held.values())
            if not slots:
                return
            try:
                await self._renew(
                    keys=[SLOTS_PREFIX + s.client for s in slots],
                    args=[STREAM_SLOT_TTL_S * 1000, *(s.member for s in slots)],
                )
            except _STORAGE_ERRORS as exc:
                logger.warning("stream slots not renewed: %s", exc)

    @property
    def streams_held(self) -> int:
        """Live-stream slots this process holds (for tests)."""
        return len(self._held) + sum(self._counts.values())

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def _per(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"
