"""Day versions: how every process learns that a day's listing changed.

Each day has a counter in Redis (`zipedge:listing:v:<source hash>:<YYYY-MM-DD>`) that
writers increment with `bump_day` *after* the new object is visible at its final key.
Every cached listing's key embeds the version it was read under, so a bump makes every
process miss exactly that day, in both tiers. `bump_day` also increments the source's
*generation* in the same MULTI; a process remembers the day versions it read with the
generation they were read at: a request whose days it knows reads just two keys (epoch
and generation), and all the versions of its range, in one MGET, only after a bump. It
asks at most every `LISTING_VERSION_CHECK_S` (a quarter second): repeat requests in
between touch no Redis, and a bump made by another process is seen within that time (one
made through `DayVersions.bump`, at once). `bump_day` also publishes the day on a Redis
channel that every process listens to, which drops the trusted versions as soon as the
message arrives, so in practice another process's bump is seen by the very next request.

Without Redis the versions live in this process. With Redis, tokens also carry an epoch
set once per Redis dataset, so a Redis restarted empty (versions back at 0) cannot revive
listings kept in process under the old counters. A failover to a replica that lost recent
bumps is not detected: those days stay stale until the next bump or expiry.

Redis is never required: `RedisBreaker` notes an error (logged at most once per
`LISTING_REDIS_LOG_INTERVAL_S`) and leaves Redis alone for `LISTING_REDIS_RETRY_AFTER_S`;
meanwhile every day's token is OFFLINE and nothing is kept long.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.constants import (
    LISTING_BUMP_LISTEN_S,
    LISTING_KNOWN_VERSIONS_MAX_DAYS,
    LISTING_REDIS_LOG_INTERVAL_S,
    LISTING_REDIS_OP_TIMEOUT_S,
    LISTING_REDIS_RETRY_AFTER_S,
    LISTING_VERSION_CHECK_S,
    LISTING_VERSION_TTL_S,
)
from service.exceptions import DependencyUnavailable
from service.listing.keys import EPOCH_KEY, OFFLINE, bumps_channel, generation_key, version_key, version_token

logger = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError)  # OSError covers TimeoutError and refused connections


async def bump_day(redis: aioredis.Redis, source_id: str, day: date) -> int:
    """Invalidate the cached listing of one day in every process; returns the new version.

    Call it after the object is visible at its final key (a listing that starts after the
    bump must see it). Raises `DependencyUnavailable` when Redis cannot be reached: the
    caller must not report the write as done, or the day would hide the new object until
    its listing is re-validated.
    """
    key = version_key(source_id, day)
    try:
        async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, LISTING_VERSION_TTL_S)
                pipe.incr(generation_key(source_id))
                pipe.publish(bumps_channel(source_id), day.isoformat())
                version, _, _, _ = await pipe.execute()
    except REDIS_ERRORS as exc:
        raise DependencyUnavailable(f"redis: could not invalidate the listing of {day}: {exc}") from exc
    return int(version)


@dataclass
class ListingStats:
    """Counters for /metrics and tests (days, not requests)."""

    local_hits: int = 0
    redis_hits: int = 0
    joined: int = 0  #: misses that waited for a listing another request had started
    source_lists: int = 0  #: day listings asked of the source
    redis_errors: int = 0
    revalidations: int = 0  #: settled days listed again in the background
    revalidation_changes: int = 0  #: of those, days found changed (and bumped)


class RedisBreaker:
    """After a Redis error, Redis is left alone for a while; errors are logged rarely."""

    def __init__(self, stats: ListingStats) -> None:
        self._stats = stats
        self._skip_until: datetime | None = None
        self._logged_at: datetime | None = None

    def resting(self, now: datetime) -> bool:
        return self._skip_until is not None and now < self._skip_until

    def succeeded(self) -> None:
        self._skip_until = None

    def failed(self, exc: BaseException, now: datetime) -> None:
        self._stats.redis_errors += 1
        self._skip_until = now + timedelta(seconds=LISTING_REDIS_RETRY_AFTER_S)
        interval = timedelta(seconds=LISTING_REDIS_LOG_INTERVAL_S)
        if self._logged_at is None or now - self._logged_at >= interval:
            self._logged_at = now
            logger.warning(
                "redis unavailable for day listings (%s: %s): listing from the source",
                type(exc).__name__,
                exc,
            )


@dataclass(slots=True)
class _KnownVersions:
    """Day tokens read from Redis together with the (epoch, generation) they were read at.

    `bump_day` increments the day's version and the source's generation in one MULTI, and
    an MGET reads them atomically, so while Redis still shows the same epoch and
    generation none of these days was bumped: a request then reads two keys, not one
    per day of its range.
    """

    stamp: tuple[Any, Any] = (None, None)
    tokens: dict[date, str] = field(default_factory=dict)
    #: Until then the tokens are used without asking Redis (`LISTING_VERSION_CHECK_S`).
    trusted_until: datetime | None = None


class DayVersions:
    """The cache token of each day: `<epoch>.<version>` with Redis, `<version>` without,
    OFFLINE while Redis cannot be asked."""

    def __init__(self, source_id: str, redis: aioredis.Redis | None, breaker: RedisBreaker) -> None:
        self.source_id = source_id
        self._redis = redis
        self._breaker = breaker
        self._local: dict[date, int] = {}
        self._known = _KnownVersions()
        self._stamp_keys = [EPOCH_KEY, generation_key(source_id)]
        self._listener: asyncio.Task[None] | None = None

    def _listen_for_bumps(self) -> None:
        """Start hearing other processes' bumps (Redis pub/sub): the versions read last are
        then dropped at once instead of being trusted for up to `LISTING_VERSION_CHECK_S`.
        An accelerator only: the generation check stays the guarantee."""
        if self._redis is not None and self._listener is None:
            self._listener = asyncio.create_task(self._hear(self._redis))

    async def _hear(self, redis: aioredis.Redis) -> None:
        first = True
        while True:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(bumps_channel(self.source_id))
                    if not first:  # bumps may have been missed while away
                        self._known = _KnownVersions()
                    first = False
                    while True:
                        message = await pubsub.get_message(timeout=LISTING_BUMP_LISTEN_S)
                        if message is not None and message.get("type") == "message":
                            self._known = _KnownVersions()
            except REDIS_ERRORS:
                await asyncio.sleep(LISTING_REDIS_RETRY_AFTER_S)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def tokens(self, days: list[date], now: datetime) -> list[str]:
        if not days:
            return []
        if self._redis is None:
            return [str(self._local.get(day, 0)) for day in days]
        self._listen_for_bumps()
        if self._breaker.resting(now):
            return [OFFLINE] * len(days)
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                tokens = await self._from_redis(self._redis, days, now)
        except REDIS_ERRORS as exc:
            self._breaker.failed(exc, now)
            return [OFFLINE] * len(days)
        self._breaker.succeeded()
        return tokens

    async def bump(self, day: date) -> int:
        """Invalidate one day's listing (in every process with Redis); the new version.
        With Redis, raises `DependencyUnavailable` when it cannot be reached."""
        if self._redis is not None:
            version = await bump_day(self._redis, self.source_id, day)
            self._known = _KnownVersions()  # this process sees its own bump at once
            return version
        version = self._local.get(day, 0) + 1
        self._local[day] = version
        return version

    async def _from_redis(self, redis: aioredis.Redis, days: list[date], now: datetime) -> list[str]:
        known = self._known
        if all(day in known.tokens for day in days):
            if known.trusted_until is not None and now < known.trusted_until:
                return [known.tokens[day] for day in days]
            stamp = tuple(await redis.mget(self._stamp_keys))
            if stamp[0] is not None and stamp == known.stamp:
                known.trusted_until = now + timedelta(seconds=LISTING_VERSION_CHECK_S)
                return [known.tokens[day] for day in days]
        raw: list[Any] = await redis.mget(
            [*self._stamp_keys, *(version_key(self.source_id, d) for d in days)]
        )
        epoch = raw[0]
        if epoch is None:
            epoch = await self.claim_epoch(redis)
        prefix = epoch.decode(errors="replace") if isinstance(epoch, bytes) else str(epoch)
        tokens = [version_token(prefix, value) for value in raw[2:]]
        # Under a just-claimed epoch too: a bump since the MGET moved the generation.
        stamp = (epoch, raw[1])
        if known.stamp != stamp or len(known.tokens) + len(days) > LISTING_KNOWN_VERSIONS_MAX_DAYS:
            known = self._known = _KnownVersions(stamp)
        known.tokens.update((day, token) for day, token in zip(days, tokens, strict=True) if token != OFFLINE)
        known.trusted_until = now + timedelta(seconds=LISTING_VERSION_CHECK_S)
        return tokens

    @staticmethod
    async def claim_epoch(redis: aioredis.Redis) -> Any:
        """A Redis that lost its data (a restart without persistence) starts a new epoch,
        so versions counting from 0 again cannot match listings kept in process from
        before. Whoever sets it first wins; everyone reads the winner's."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(EPOCH_KEY, secrets.token_hex(4), nx=True)
            pipe.get(EPOCH_KEY)
            _, epoch = await pipe.execute()
        return epoch
