"""Day listings, cached, so that resolving a selection does not LIST every day on every click.

`DayListingCache.list_days(prefixes)` answers a whole date range: a day is looked up by
its version token (`versions.py`) in the in-process tier (`tiers.py`), then in Redis (one
zlib-compressed JSON blob per day, shared by every process, `keys.py`), then listed from
the source, once per (day, version) however many requests want it at the same moment.

Freshness. A day is *settled* once it ended (UTC) more than `LISTING_LATE_UPLOAD_MARGIN_S`
ago; its listing is kept long (changes arrive through bumps). Today, the margin after
midnight and future days are *live* and kept briefly. Every entry carries its own deadline
computed with the injectable clock `now` (tests move it; the aiocache and Redis TTLs only
reclaim memory). A failed listing is never cached. A read that finds an object changed or
gone (written behind the cache's back, without a bump) calls `invalidate`, so the damage
is one failed download, not a day of them.

The Redis client is created by the caller. It must keep `decode_responses=False` (blobs
are binary), and should fail fast: `socket_connect_timeout` and `socket_timeout` of about
0.5-1 s. Every call here is also cut at `LISTING_REDIS_OP_TIMEOUT_S` whatever the client
does; any Redis error degrades to the source (see `RedisBreaker`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redis import asyncio as aioredis

from service.constants import (
    LIST_CONCURRENCY,
    LISTING_LIVE_TTL_S,
    LISTING_LOCAL_MAX_OBJECTS,
    LISTING_REDIS_OP_TIMEOUT_S,
    LISTING_SETTLED_LOCAL_TTL_S,
    LISTING_SETTLED_REDIS_TTL_S,
)
from service.exceptions import DependencyUnavailable, SourceUnavailable
from service.index import ObjectIndex
from service.index.memory import MemoryObjectIndex
from service.listing.direct import list_with_crcs
from service.listing.keys import (
    OFFLINE,
    day_of_key,
    day_prefixes,
    decode_listing,
    encode_listing,
    is_settled,
    listing_key,
    parse_day_prefix,
)
from service.listing.tiers import Day, KeptRanges, LocalTier, run_codec
from service.listing.versions import REDIS_ERRORS, DayVersions, ListingStats, RedisBreaker
from service.sources.base import ObjectInfo, Source

logger = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DayListingCache:
    """Day listings of `source`, cached in process and, with `redis`, in Redis.

    `source_id` names the source in Redis keys and must be the same string in every
    process that shares the listings and in every writer calling `bump_day`
    (`str(settings.source)`). `now` returns the current time (UTC; naive means UTC).
    """

    #: Listings are the same tuple for a day until it is re-listed (the resolver's memo
    #: relies on that identity).
    stable = True

    def __init__(
        self,
        source: Source,
        *,
        source_id: str,
        redis: aioredis.Redis | None = None,
        now: Callable[[], datetime] = _utcnow,
        local_max_objects: int = LISTING_LOCAL_MAX_OBJECTS,
        index: ObjectIndex | None = None,
    ) -> None:
        self.source = source
        self.source_id = source_id
        #: CRCs are looked up when a day is listed and cached with it; `bump` the day when
        #: new ones are learned (see `Streams`)
        self.index = index or MemoryObjectIndex()
        self.stats = ListingStats()
        self._redis = redis
        self._now = now
        self._breaker = RedisBreaker(self.stats)
        self._versions = DayVersions(source_id, redis, self._breaker)
        self._local = LocalTier(local_max_objects)
        self._ranges = KeptRanges(local_max_objects)
        self._inflight: dict[str, asyncio.Task[tuple[ObjectInfo, ...]]] = {}

    async def aclose(self) -> None:
        """Cancel shared listings still running and drop the in-process tier. The source
        and the Redis client belong to the caller."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._local.clear()

    async def list_days(self, prefixes: Sequence[str]) -> list[tuple[ObjectInfo, ...]]:
        """The listing of every prefix, in order, as `list` would give them one by one.

        At most one Redis MGET of versions, one MGET of blobs for the in-process misses,
        source listings for the rest (at most `LIST_CONCURRENCY` at once, shared with
        concurrent requests), then one pipelined SET. The first source error is raised
        (as `list` would); Redis errors never are.
        """
        now = self._clock()
        key = tuple(prefixes)
        days = day_prefixes(key)
        tokens = await self._versions.tokens([day for _, _, day in days], now)
        every_prefix_a_day = len(days) == len(key)
        if every_prefix_a_day:
            kept = self._ranges.get(key, tuple(tokens), now)
            if kept is not None:
                self.stats.local_hits += len(key)
                return list(kept.listings)
        results: list[tuple[ObjectInfo, ...] | None] = [None] * len(prefixes)
        wanted = [
            Day(index, prefix, day, token) for (index, prefix, day), token in zip(days, tokens, strict=True)
        ]

        # 1. In-process tier.
        expires = await self._from_local(wanted, results, now)
        if every_prefix_a_day and expires is not None and all(r is not None for r in results):
            self._ranges.keep(key, tuple(tokens), results, expires)

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
        created: list[Day] = []
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
        return await self._versions.bump(day)

    async def invalidate(self, key: str) -> None:
        """An object under `key` changed or vanished behind the cache's back: forget its
        day's listing (logged, never raised: the caller is already failing)."""
        day = day_of_key(key)
        if day is None:
            return
        try:
            await self.bump(day)
        except DependencyUnavailable as exc:
            logger.warning("could not invalidate the listing of %s: %s", day, exc.message)

    # --- internals ------------------------------------------------------------------------

    def _clock(self) -> datetime:
        now = self._now()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    @staticmethod
    def _ttls(item: Day, now: datetime) -> tuple[int, int]:
        """(in-process, Redis) lifetimes in seconds of a listing taken `now`."""
        if item.token == OFFLINE or not is_settled(item.day, now):
            return LISTING_LIVE_TTL_S, LISTING_LIVE_TTL_S
        return LISTING_SETTLED_LOCAL_TTL_S, LISTING_SETTLED_REDIS_TTL_S

    async def _from_local(
        self, items: list[Day], results: list[tuple[ObjectInfo, ...] | None], now: datetime
    ) -> datetime | None:
        """Fill `results` from the in-process tier; the earliest expiry among the hits."""
        expires: datetime | None = None
        for item, entry in zip(items, await self._local.get_many([w.key for w in items], now), strict=True):
            if entry is not None:
                results[item.index] = entry.objects
                self.stats.local_hits += 1
                expires = entry.expires if expires is None else min(expires, entry.expires)
        return expires

    async def _redis_mget(self, keys: list[str]) -> list[Any] | None:
        assert self._redis is not None
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                values: list[Any] = await self._redis.mget(keys)
                return values
        except REDIS_ERRORS as exc:
            self._breaker.failed(exc, self._clock())
            return None

    async def _from_blobs(
        self,
        items: list[Day],
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
        decoded: list[tuple[datetime, tuple[ObjectInfo, ...]] | None] = await run_codec(decode_all, size)
        for (w, _), entry in zip(found, decoded, strict=True):
            if entry is None or entry[0] <= now:
                continue
            expires, objects = entry
            results[w.index] = objects
            self.stats.redis_hits += 1
            local_ttl, _ = self._ttls(w, now)
            # Never kept in process longer than its writer allowed.
            await self._local.put(w.key, objects, min(local_ttl, (expires - now).total_seconds()), now)

    async def _redis_store(self, listed: list[tuple[Day, tuple[ObjectInfo, ...] | None]]) -> None:
        assert self._redis is not None
        now = self._clock()
        if self._breaker.resting(now):
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
        blobs: list[bytes] = await run_codec(encode_all, 40 * sum(len(objects) for _, _, objects, _ in items))
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (key, ttl, _, _), blob in zip(items, blobs, strict=True):
                        pipe.set(key, blob, ex=ttl)
                    await pipe.execute()
        except REDIS_ERRORS as exc:
            self._breaker.failed(exc, now)

    async def _fill(self, item: Day, semaphore: asyncio.Semaphore) -> tuple[ObjectInfo, ...]:
        """One shared source listing. Stored in process before the task completes, so a
        later request finds it either in flight or in the tier, never in neither."""
        async with semaphore:
            self.stats.source_lists += 1
            objects = await list_with_crcs(self.source, self.index, self.source_id, item.prefix)
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
                return await list_with_crcs(self.source, self.index, self.source_id, prefixes[i])

        try:
            async with asyncio.TaskGroup() as group:
                tasks = {i: group.create_task(one(i, shared)) for i, shared in waits.items()}
        except ExceptionGroup as group_error:
            first: BaseException = group_error
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return {i: task.result() for i, task in tasks.items()}

    # Last in the class: below this definition `list` names the method, not the builtin.
    async def list(self, prefix: str) -> list[ObjectInfo]:
        """One day's listing (a convenience over `list_days`)."""
        if parse_day_prefix(prefix) is None:
            raise ValueError(f"not a day prefix: {prefix!r}")
        return list((await self.list_days([prefix]))[0])
