"""Day listings, cached, so that resolving a selection does not LIST every day on every click.

`DayListingCache` wraps a `Source` and is one: `list("YYYY/MM/DD/")` is cached, any other
prefix passes through, and `stat`, `read`, `check`, `aclose` delegate. The resolver calls
`list_days(prefixes)` for a whole date range, which batches the Redis round trips.

Two tiers, both keyed by (source, day, version):

* in process: aiocache's `SimpleMemoryCache`, bounded by a number of objects (least
  recently used days go first), because a year of busy days would otherwise pin gigabytes;
* Redis (optional): one zlib-compressed JSON blob per day, shared by every process.

Versions. Each day has a counter in Redis (`zipedge:listing:v:<source hash>:<YYYY-MM-DD>`)
that writers increment with `bump_day` *after* the new object is visible at its final key.
Every cached listing's key embeds the version it was read under, so a bump makes every
process miss exactly that day, in both tiers. `bump_day` also increments the source's
*generation* in the same MULTI; a process remembers the day versions it read with the
generation they were read at: a request whose days it knows reads just two keys (epoch
and generation), and all the versions of its range, in one MGET, only after a bump. It
asks at most every `LISTING_VERSION_CHECK_S` (a quarter second): repeat requests in
between touch no Redis, and a bump made by another process is seen within that time (one
made through this cache's `bump`, at once). Writers must bump through `bump_day`.
Without Redis the versions live in this process and `bump` increments them here. With
Redis, tokens also carry an epoch set once per Redis dataset, so a Redis restarted empty
(versions back at 0) cannot revive listings kept in process under the old counters. A
failover to a replica that lost recent bumps is not detected: those days stay stale
until the next bump or expiry (a read that meets a changed or missing object bumps, see
below).

Freshness. A day is *settled* once it ended (UTC) more than `LISTING_LATE_UPLOAD_MARGIN_S`
ago; its listing is kept long (changes arrive through bumps). Today, the margin after
midnight and future days are *live* and kept briefly. Every entry carries its own deadline
computed with the injectable clock `now` (tests move it; the aiocache and Redis TTLs only
reclaim memory).

Redis is never required. Any Redis error, or a call slower than
`LISTING_REDIS_OP_TIMEOUT_S`, is logged at most once per `LISTING_REDIS_LOG_INTERVAL_S`;
Redis is then left alone for `LISTING_REDIS_RETRY_AFTER_S`, and meanwhile listings come
from the source and the in-process tier under an "offline" version kept only
`LISTING_LIVE_TTL_S` (a bump made meanwhile cannot be seen, so nothing is kept long).

A failed listing is never cached. A read that finds an object changed or gone (written
behind the cache's back, without a bump) bumps its day, so the damage is one failed
download, not a day of them.

The Redis client is created by the caller. It must keep `decode_responses=False` (blobs
are binary), and should fail fast: `socket_connect_timeout` and `socket_timeout` of about
0.5-1 s and at most one retry (redis-py 8 defaults to 5 s timeouts and 10 retries with
backoff). Every call here is also cut at `LISTING_REDIS_OP_TIMEOUT_S` whatever the client
does.

Stampede: concurrent misses of one day in one process share one source listing.

Repeats: a range answered wholly from the in-process tier is kept as one `_Range`, so the
next request for it costs the version check and a comparison, not a lookup per day.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import re
import secrets
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from aiocache import SimpleMemoryCache
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.constants import (
    LIST_CONCURRENCY,
    LISTING_INLINE_CODEC_BYTES,
    LISTING_LATE_UPLOAD_MARGIN_S,
    LISTING_LIVE_TTL_S,
    LISTING_LOCAL_MAX_OBJECTS,
    LISTING_REDIS_LOG_INTERVAL_S,
    LISTING_REDIS_OP_TIMEOUT_S,
    LISTING_REDIS_RETRY_AFTER_S,
    LISTING_SETTLED_LOCAL_TTL_S,
    LISTING_SETTLED_REDIS_TTL_S,
    LISTING_VERSION_CHECK_S,
    LISTING_VERSION_TTL_S,
    LISTING_ZLIB_LEVEL,
)
from service.exceptions import DependencyUnavailable, ObjectChanged, ObjectMissing, SourceUnavailable
from service.sources.base import ObjectInfo, Source, closing

logger = logging.getLogger(__name__)


#: Redis key prefix; the blob key carries a format number so that a change of the blob
#: layout never misreads blobs written by older processes during a rolling deploy.
KEY_PREFIX: Final = "zipedge:listing:"
BLOB_FORMAT: Final = 1

#: Set once per Redis dataset (no TTL) and part of every cache token: see `_claim_epoch`.
EPOCH_KEY: Final = KEY_PREFIX + "epoch"

#: Whole date ranges a process keeps answers of (see `_Range`); also bounded by objects.
RANGES_KEPT: Final = 64

#: Days whose versions a process remembers between bumps (see `_KnownVersions`); a year
#: of days is 365, and past this the memory starts over.
KNOWN_VERSIONS_MAX_DAYS: Final = 10_000

#: The cache token of a day while Redis is unreachable.
OFFLINE: Final = "offline"

_DAY_PREFIX = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})/")
_REDIS_ERRORS = (RedisError, OSError)  # OSError covers TimeoutError and refused connections


def parse_day_prefix(prefix: str) -> date | None:
    """The day of a `YYYY/MM/DD/` prefix, or None for any other prefix (not cached)."""
    match = _DAY_PREFIX.fullmatch(prefix)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def day_of_key(key: str) -> date | None:
    """The day partition of an object key (`2025/01/05/x.jpg` -> 2025-01-05), for writers
    that must `bump` the day they wrote to; None if the key is not under a day."""
    return parse_day_prefix(key[:11]) if len(key) > 11 else None


@functools.lru_cache(maxsize=64)
def source_hash(source_id: str) -> str:
    """Short stable id of a source for Redis keys (hides URLs, keeps keys short)."""
    return hashlib.sha256(source_id.encode()).hexdigest()[:16]


def version_key(source_id: str, day: date) -> str:
    return f"{KEY_PREFIX}v:{source_hash(source_id)}:{day.isoformat()}"


def generation_key(source_id: str) -> str:
    """Counts every bump of any day of the source: an unchanged generation means every
    day version read before it is still current (see `_KnownVersions`)."""
    return f"{KEY_PREFIX}g:{source_hash(source_id)}"


def listing_key(source_id: str, day: date, token: str) -> str:
    """Redis key of a day's blob; `token` is `<epoch>.<version>` (see `DayListingCache`)."""
    return f"{KEY_PREFIX}d{BLOB_FORMAT}:{source_hash(source_id)}:{day.isoformat()}:{token}"


def is_settled(day: date, now: datetime) -> bool:
    """True once `day` ended (UTC) more than the late-upload margin before `now`."""
    try:
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        return now >= end + timedelta(seconds=LISTING_LATE_UPLOAD_MARGIN_S)
    except OverflowError:  # date.max
        return False


def encode_listing(objects: Sequence[ObjectInfo], expires: datetime) -> bytes:
    """`[expiry epoch seconds, [[key, size, etag, mtime, crc32|null], ...]]`, zlib'd."""
    rows = [[o.key, o.size, o.etag, o.mtime, o.crc32] for o in objects]
    text = json.dumps([expires.timestamp(), rows], separators=(",", ":"), ensure_ascii=False)
    return zlib.compress(text.encode(), LISTING_ZLIB_LEVEL)


def decode_listing(blob: bytes, prefix: str) -> tuple[datetime, tuple[ObjectInfo, ...]]:
    """The expiry and objects of a blob; `ValueError` if it is not one we wrote for `prefix`.
    Checked field by field: a wrong size or ETag here would end up in an archive."""
    try:
        document = json.loads(zlib.decompress(blob))
    except zlib.error as exc:
        raise ValueError(f"not a listing blob: {exc}") from None
    if not (isinstance(document, list) and len(document) == 2 and isinstance(document[1], list)):
        raise ValueError("not a listing blob")
    expiry, rows = document
    if type(expiry) not in (int, float):
        raise ValueError("bad expiry")
    objects: list[ObjectInfo] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 5):
            raise ValueError("bad row")
        key, size, etag, mtime, crc32 = row
        if not (
            type(key) is str
            and key.startswith(prefix)
            and type(size) is int
            and size >= 0
            and type(etag) is str
            and type(mtime) is int
            and (crc32 is None or (type(crc32) is int and 0 <= crc32 <= 0xFFFFFFFF))
        ):
            raise ValueError(f"bad row {row!r}")
        objects.append(ObjectInfo(key, size, etag, mtime, crc32))
    return datetime.fromtimestamp(expiry, UTC), tuple(objects)


async def bump_day(redis: aioredis.Redis, source_id: str, day: date) -> int:
    """Invalidate the cached listing of one day in every process; returns the new version.

    Call it after the object is visible at its final key (a listing that starts after the
    bump must see it). Raises `DependencyUnavailable` when Redis cannot be reached: the
    caller must not report the write as done, or a settled day would hide the new object
    for up to `LISTING_SETTLED_REDIS_TTL_S`.
    """
    key = version_key(source_id, day)
    try:
        async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
            async with redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, LISTING_VERSION_TTL_S)
                pipe.incr(generation_key(source_id))
                version, _, _ = await pipe.execute()
    except _REDIS_ERRORS as exc:
        raise DependencyUnavailable(f"redis: could not invalidate the listing of {day}: {exc}") from exc
    return int(version)


@dataclass
class ListingStats:
    """Counters for /metrics and tests (days, not requests)."""

    local_hits: int = 0
    redis_hits: int = 0
    joined: int = 0  #: misses that waited for a listing another request had started
    source_lists: int = 0  #: day listings asked of the source (passthrough prefixes too)
    redis_errors: int = 0


@dataclass(frozen=True, slots=True)
class _Entry:
    objects: tuple[ObjectInfo, ...]
    expires: datetime


@dataclass(frozen=True, slots=True)
class _Range:
    """A whole `list_days` answer taken from the in-process tier, kept so that a repeated
    range skips the per-day lookups: valid while its days' tokens are unchanged and until
    the earliest of its entries expires, i.e. exactly as long as the tier would answer
    the same. `weight` counts objects (+1 a day) against the tier's budget."""

    tokens: tuple[str, ...]
    listings: tuple[tuple[ObjectInfo, ...], ...]
    expires: datetime
    weight: int


@functools.lru_cache(maxsize=1024)  # ranges repeat: parse each once
def _day_prefixes(prefixes: tuple[str, ...]) -> tuple[tuple[int, str, date], ...]:
    """(index, prefix, day) of the prefixes that name a day."""
    found = ((index, prefix, parse_day_prefix(prefix)) for index, prefix in enumerate(prefixes))
    return tuple((index, prefix, day) for index, prefix, day in found if day is not None)


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


@dataclass(slots=True)
class _Day:
    """One day prefix of a `list_days` call: where its result goes and its cache key."""

    index: int
    prefix: str
    day: date
    token: str = OFFLINE

    @property
    def key(self) -> str:
        """In-process key (the tier belongs to one source, so no source part)."""
        return f"{self.day.isoformat()}:{self.token}"


class _LocalTier:
    """aiocache's SimpleMemoryCache plus a budget of objects, least recently used first.

    aiocache reclaims expired entries on the loop's clock; each entry's own deadline
    decides on the injectable one. Weights of entries aiocache reclaimed by itself stay
    counted until they reach the old end of the order: the budget is only ever
    under-used, never exceeded. SimpleMemoryCache never suspends (it is a dict), which
    `DayListingCache` relies on to check and claim a key atomically.
    """

    def __init__(self, max_objects: int) -> None:
        # timeout=None: otherwise every dict lookup runs in asyncio.wait_for (a task each).
        self._cache: Any = SimpleMemoryCache(timeout=None)
        self._weights: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        self._max = max_objects

    @property
    def max_objects(self) -> int:
        return self._max

    async def get_many(self, keys: Sequence[str], now: datetime) -> list[_Entry | None]:
        if not keys:
            return []
        values: list[Any] = await self._cache.multi_get(list(keys))
        found: list[_Entry | None] = []
        for key, value in zip(keys, values, strict=True):
            if isinstance(value, _Entry) and value.expires > now:
                if key in self._weights:
                    self._weights.move_to_end(key)
                found.append(value)
                continue
            if value is not None:
                await self._cache.delete(key)
            self._forget(key)
            found.append(None)
        return found

    async def put(self, key: str, objects: tuple[ObjectInfo, ...], ttl_s: float, now: datetime) -> None:
        weight = len(objects) + 1  # +1: empty days cost a key too
        if weight > self._max:
            return
        self._forget(key)
        await self._cache.set(key, _Entry(objects, now + timedelta(seconds=ttl_s)), ttl=ttl_s)
        self._weights[key] = weight
        self._total += weight
        while self._total > self._max:
            old, old_weight = self._weights.popitem(last=False)
            self._total -= old_weight
            await self._cache.delete(old)

    async def clear(self) -> None:
        for key in list(self._weights):
            await self._cache.delete(key)  # also cancels aiocache's expiry timer
        self._weights.clear()
        self._total = 0

    def _forget(self, key: str) -> None:
        self._total -= self._weights.pop(key, 0)


async def _codec(func: Callable[[], Any], size: int) -> Any:
    """Run a CPU-bound encode/decode inline when small, in a worker thread when large."""
    if size <= LISTING_INLINE_CODEC_BYTES:
        return func()
    return await asyncio.to_thread(func)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DayListingCache:
    """A `Source` whose day listings are cached in process and, with `redis`, in Redis.

    `source_id` names the source in Redis keys and must be the same string in every
    process that shares the listings and in every writer calling `bump_day`
    (`str(settings.source)`). `now` returns the current time (UTC; naive means UTC).
    """

    def __init__(
        self,
        source: Source,
        *,
        source_id: str,
        redis: aioredis.Redis | None = None,
        now: Callable[[], datetime] = _utcnow,
        local_max_objects: int = LISTING_LOCAL_MAX_OBJECTS,
    ) -> None:
        self.source = source
        self.source_id = source_id
        self.stats = ListingStats()
        self._redis = redis
        self._now = now
        self._local = _LocalTier(local_max_objects)
        self._local_versions: dict[date, int] = {}
        self._known = _KnownVersions()
        self._ranges: OrderedDict[tuple[str, ...], _Range] = OrderedDict()
        self._range_objects = 0
        self._stamp_keys = [EPOCH_KEY, generation_key(source_id)]
        self._inflight: dict[str, asyncio.Task[tuple[ObjectInfo, ...]]] = {}
        self._redis_skip_until: datetime | None = None
        self._redis_logged_at: datetime | None = None

    # --- the Source protocol -------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        return await self.source.stat(key)

    async def read(self, key: str, *, offset: int = 0, etag: str = "") -> AsyncIterator[bytes]:
        """The source's bytes. An object that changed or vanished behind the cache's back
        (written without a bump) invalidates its day, so one failed download corrects
        the listing instead of every request failing until the listing expires."""
        try:
            async with closing(self.source.read(key, offset=offset, etag=etag)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except (ObjectChanged, ObjectMissing):
            await self._invalidate_key(key)
            raise

    async def check(self) -> None:
        await self.source.check()

    async def aclose(self) -> None:
        """Cancel shared listings still running, drop the in-process tier, close the source.
        The Redis client belongs to the caller."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._local.clear()
        await self.source.aclose()

    # --- batched listing ----------------------------------------------------------------

    async def list_days(self, prefixes: Sequence[str]) -> list[tuple[ObjectInfo, ...]]:
        """The listing of every prefix, in order, as `list` would give them one by one.

        At most one Redis MGET of versions, one MGET of blobs for the in-process misses,
        source listings for the rest (at most `LIST_CONCURRENCY` at once, shared with
        concurrent requests), then one pipelined SET. The first source error is raised
        (as `list` would); Redis errors never are.
        """
        now = self._clock()
        key = tuple(prefixes)
        days = _day_prefixes(key)
        tokens = await self._versions([day for _, _, day in days], now)
        every_prefix_a_day = len(days) == len(key)
        if every_prefix_a_day:
            kept = self._ranges.get(key)
            if kept is not None and kept.tokens == tuple(tokens) and now < kept.expires:
                self._ranges.move_to_end(key)
                self.stats.local_hits += len(key)
                return list(kept.listings)
        results: list[tuple[ObjectInfo, ...] | None] = [None] * len(prefixes)
        wanted = [
            _Day(index, prefix, day, token) for (index, prefix, day), token in zip(days, tokens, strict=True)
        ]

        # 1. In-process tier.
        expires = await self._from_local(wanted, results, now)
        if every_prefix_a_day and expires is not None and all(r is not None for r in results):
            self._keep_range(key, tuple(tokens), results, expires)

        # 2. Redis tier, for the misses under a known version.
        misses = [w for w in wanted if results[w.index] is None and w.token != OFFLINE]
        if misses and self._redis is not None:
            blobs = await self._redis_mget([listing_key(self.source_id, w.day, w.token) for w in misses])
            if blobs is not None:
                await self._from_blobs(misses, blobs, results, now)
            # Another request may have filled some while Redis answered. From here to the
            # claims below nothing suspends, so a listing is found either in the tier or
            # in flight (`_fill` stores it before its task completes).
            await self._from_local([w for w in wanted if results[w.index] is None], results, now)

        # 3. The source, shared with concurrent requests for the same (day, version).
        semaphore = asyncio.Semaphore(LIST_CONCURRENCY)
        waits: dict[int, asyncio.Task[tuple[ObjectInfo, ...]] | None] = {
            i: None for i in range(len(prefixes)) if results[i] is None
        }  # None: not a day, listed directly and never cached
        created: list[_Day] = []
        for w in wanted:
            if results[w.index] is not None:
                continue
            task = self._inflight.get(w.key)
            if task is None:
                task = asyncio.create_task(self._fill(w, semaphore))
                self._inflight[w.key] = task
                task.add_done_callback(self._make_forget(w.key))
                created.append(w)
            else:
                self.stats.joined += 1
            waits[w.index] = task
        if waits:
            for i, objects in (await self._await_all(waits, prefixes, semaphore)).items():
                results[i] = objects

        # 4. Share what this request listed.
        if created and self._redis is not None:
            await self._redis_store([(w, results[w.index]) for w in created])

        # Immutable, and the same tuple for a day until it is re-listed (the resolver's
        # memo relies on that identity).
        final = [listing for listing in results if listing is not None]
        assert len(final) == len(results)
        return final

    async def bump(self, day: date) -> int:
        """Invalidate one day's listing (in every process with Redis); the new version.
        With Redis, raises `DependencyUnavailable` when it cannot be reached."""
        if self._redis is not None:
            version = await bump_day(self._redis, self.source_id, day)
            self._known = _KnownVersions()  # this process sees its own bump at once
            return version
        version = self._local_versions.get(day, 0) + 1
        self._local_versions[day] = version
        return version

    # --- internals ------------------------------------------------------------------------

    async def _invalidate_key(self, key: str) -> None:
        day = day_of_key(key)
        if day is None:
            return
        try:
            await self.bump(day)
        except DependencyUnavailable as exc:
            logger.warning("could not invalidate the listing of %s: %s", day, exc.message)

    def _clock(self) -> datetime:
        now = self._now()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    def _redis_resting(self, now: datetime) -> bool:
        return self._redis_skip_until is not None and now < self._redis_skip_until

    @staticmethod
    def _ttls(item: _Day, now: datetime) -> tuple[int, int]:
        """(in-process, Redis) lifetimes in seconds of a listing taken `now`."""
        if item.token == OFFLINE or not is_settled(item.day, now):
            return LISTING_LIVE_TTL_S, LISTING_LIVE_TTL_S
        return LISTING_SETTLED_LOCAL_TTL_S, LISTING_SETTLED_REDIS_TTL_S

    async def _versions(self, days: list[date], now: datetime) -> list[str]:
        """Each day's cache token: `<epoch>.<version>` with Redis, `<version>` without,
        OFFLINE while Redis cannot be asked."""
        if not days:
            return []
        if self._redis is None:
            return [str(self._local_versions.get(day, 0)) for day in days]
        if self._redis_resting(now):
            return [OFFLINE] * len(days)
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                tokens = await self._redis_versions(self._redis, days, now)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc, now)
            return [OFFLINE] * len(days)
        self._redis_skip_until = None
        return tokens

    async def _redis_versions(self, redis: aioredis.Redis, days: list[date], now: datetime) -> list[str]:
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
            epoch = await self._claim_epoch(redis)
        prefix = epoch.decode(errors="replace") if isinstance(epoch, bytes) else str(epoch)
        tokens = [_version_token(prefix, value) for value in raw[2:]]
        # Under a just-claimed epoch too: a bump since the MGET moved the generation.
        stamp = (epoch, raw[1])
        if known.stamp != stamp or len(known.tokens) + len(days) > KNOWN_VERSIONS_MAX_DAYS:
            known = self._known = _KnownVersions(stamp)
        known.tokens.update((day, token) for day, token in zip(days, tokens, strict=True) if token != OFFLINE)
        known.trusted_until = now + timedelta(seconds=LISTING_VERSION_CHECK_S)
        return tokens

    @staticmethod
    async def _claim_epoch(redis: aioredis.Redis) -> Any:
        """A Redis that lost its data (a restart without persistence) starts a new epoch,
        so versions counting from 0 again cannot match listings kept in process from
        before. Whoever sets it first wins; everyone reads the winner's."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(EPOCH_KEY, secrets.token_hex(4), nx=True)
            pipe.get(EPOCH_KEY)
            _, epoch = await pipe.execute()
        return epoch

    async def _from_local(
        self, items: list[_Day], results: list[tuple[ObjectInfo, ...] | None], now: datetime
    ) -> datetime | None:
        """Fill `results` from the in-process tier; the earliest expiry among the hits."""
        expires: datetime | None = None
        for item, entry in zip(items, await self._local.get_many([w.key for w in items], now), strict=True):
            if entry is not None:
                results[item.index] = entry.objects
                self.stats.local_hits += 1
                expires = entry.expires if expires is None else min(expires, entry.expires)
        return expires

    def _keep_range(
        self,
        key: tuple[str, ...],
        tokens: tuple[str, ...],
        results: list[tuple[ObjectInfo, ...] | None],
        expires: datetime,
    ) -> None:
        listings = tuple(r for r in results if r is not None)
        old = self._ranges.pop(key, None)
        if old is not None:
            self._range_objects -= old.weight
        kept = _Range(tokens, listings, expires, sum(len(day) for day in listings) + len(listings))
        if kept.weight > self._local.max_objects:
            return
        self._ranges[key] = kept
        self._range_objects += kept.weight
        while self._range_objects > self._local.max_objects or len(self._ranges) > RANGES_KEPT:
            _, dropped = self._ranges.popitem(last=False)
            self._range_objects -= dropped.weight

    async def _redis_mget(self, keys: list[str]) -> list[Any] | None:
        assert self._redis is not None
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                values: list[Any] = await self._redis.mget(keys)
                return values
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc, self._clock())
            return None

    async def _from_blobs(
        self,
        items: list[_Day],
        blobs: list[Any],
        results: list[tuple[ObjectInfo, ...] | None],
        now: datetime,
    ) -> None:
        found = [(w, blob) for w, blob in zip(items, blobs, strict=True) if isinstance(blob, bytes)]
        if not found:
            return

        def decode_all() -> list[tuple[datetime, tuple[ObjectInfo, ...]] | None]:
            decoded: list[tuple[datetime, tuple[ObjectInfo, ...]] | None] = []
            for w, blob in found:
                try:
                    decoded.append(decode_listing(blob, w.prefix))
                except ValueError as exc:
                    logger.warning("ignoring a bad cached listing of %s: %s", w.prefix, exc)
                    decoded.append(None)
            return decoded

        size = sum(len(blob) for _, blob in found)
        decoded: list[tuple[datetime, tuple[ObjectInfo, ...]] | None] = await _codec(decode_all, size)
        for (w, _), entry in zip(found, decoded, strict=True):
            if entry is None or entry[0] <= now:
                continue
            expires, objects = entry
            results[w.index] = objects
            self.stats.redis_hits += 1
            local_ttl, _ = self._ttls(w, now)
            # Never kept in process longer than its writer allowed.
            await self._local.put(w.key, objects, min(local_ttl, (expires - now).total_seconds()), now)

    async def _redis_store(self, listed: list[tuple[_Day, tuple[ObjectInfo, ...] | None]]) -> None:
        assert self._redis is not None
        now = self._clock()
        if self._redis_resting(now):
            return
        items: list[tuple[str, int, tuple[ObjectInfo, ...], datetime]] = []
        for w, objects in listed:
            if objects is None or w.token == OFFLINE:
                continue
            _, ttl = self._ttls(w, now)
            items.append(
                (listing_key(self.source_id, w.day, w.token), ttl, objects, now + timedelta(seconds=ttl))
            )
        if not items:
            return

        def encode_all() -> list[bytes]:
            return [encode_listing(objects, expires) for _, _, objects, expires in items]

        # About 40 compressed bytes per object: the guess that picks inline or a thread.
        blobs: list[bytes] = await _codec(encode_all, 40 * sum(len(objects) for _, _, objects, _ in items))
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (key, ttl, _, _), blob in zip(items, blobs, strict=True):
                        pipe.set(key, blob, ex=ttl)
                    await pipe.execute()
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc, now)

    async def _fill(self, item: _Day, semaphore: asyncio.Semaphore) -> tuple[ObjectInfo, ...]:
        """One shared source listing. Stored in process before the task completes, so a
        later request finds it either in flight or in the tier, never in neither."""
        async with semaphore:
            self.stats.source_lists += 1
            objects = tuple(await self.source.list(item.prefix))
        now = self._clock()
        local_ttl, _ = self._ttls(item, now)
        await self._local.put(item.key, objects, local_ttl, now)
        return objects

    def _make_forget(self, key: str) -> Callable[[asyncio.Task[tuple[ObjectInfo, ...]]], None]:
        def forget(task: asyncio.Task[tuple[ObjectInfo, ...]]) -> None:
            if self._inflight.get(key) is task:
                del self._inflight[key]
            if not task.cancelled():
                task.exception()  # retrieved: every waiter may have gone away

        return forget

    async def _await_all(
        self,
        waits: dict[int, asyncio.Task[tuple[ObjectInfo, ...]] | None],
        prefixes: Sequence[str],
        semaphore: asyncio.Semaphore,
    ) -> dict[int, tuple[ObjectInfo, ...]]:
        """Every wait in `waits`; the first error is raised as itself. Shared listings are
        shielded: this request giving up must not cancel them for the others."""

        async def one(i: int, shared: asyncio.Task[tuple[ObjectInfo, ...]] | None) -> tuple[ObjectInfo, ...]:
            if shared is not None:
                try:
                    return await asyncio.shield(shared)
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if shared.cancelled() and me is not None and not me.cancelling():
                        # `aclose` stopped the listing this request was waiting for.
                        raise SourceUnavailable(f"listing {prefixes[i]} was cancelled") from None
                    raise
            async with semaphore:
                self.stats.source_lists += 1
                return tuple(await self.source.list(prefixes[i]))

        try:
            async with asyncio.TaskGroup() as group:
                tasks = {i: group.create_task(one(i, shared)) for i, shared in waits.items()}
        except ExceptionGroup as group_error:
            first: BaseException = group_error
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return {i: task.result() for i, task in tasks.items()}

    def _redis_failed(self, exc: BaseException, now: datetime) -> None:
        self.stats.redis_errors += 1
        self._redis_skip_until = now + timedelta(seconds=LISTING_REDIS_RETRY_AFTER_S)
        interval = timedelta(seconds=LISTING_REDIS_LOG_INTERVAL_S)
        if self._redis_logged_at is None or now - self._redis_logged_at >= interval:
            self._redis_logged_at = now
            logger.warning(
                "redis unavailable for day listings (%s: %s): listing from the source",
                type(exc).__name__,
                exc,
            )

    # Last in the class: below this definition `list` names the method, not the builtin.
    async def list(self, prefix: str) -> list[ObjectInfo]:
        if parse_day_prefix(prefix) is None:
            self.stats.source_lists += 1
            return await self.source.list(prefix)
        return list((await self.list_days([prefix]))[0])


def _version_token(epoch: str, value: Any) -> str:
    """A day's cache token: `<epoch>.<version>`, version 0 when never bumped; OFFLINE when
    the version is unreadable (then nothing is kept long)."""
    if value is None:
        return f"{epoch}.0"
    try:
        version = int(value)
    except (TypeError, ValueError):
        logger.warning("ignoring a bad listing version %r", value)
        return OFFLINE
    return f"{epoch}.{version}" if version >= 0 else OFFLINE
