"""Refresh-ahead of settled days: how a change made behind zipedge's back (a late camera
writing straight to the bucket, a backfill script, a lifecycle delete) becomes visible
within ZIPEDGE_LISTING_MAX_STALE_S, without a request ever waiting for it.

A settled day's listing lives at most max-stale in both tiers. Once it is
`LISTING_REFRESH_AT_FRACTION` through its life, the next request that uses it starts a
re-validation in the background and carries on with the cached listing. The re-validation
claims the day (Redis `SET NX` with the interval as TTL: one LIST per day per interval
across every process; in process only, without Redis), lists the source, and then either
extends the listing's life (unchanged: the same tuple, in both tiers) or bumps the day
(changed: every process re-lists it). Expiries count from when the LIST started, so no
listing served is older than max-stale.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta

from redis import asyncio as aioredis

from service.constants import LISTING_KNOWN_VERSIONS_MAX_DAYS, LISTING_REDIS_OP_TIMEOUT_S
from service.exceptions import ZipedgeError
from service.listing.keys import refresh_key
from service.listing.tiers import Day
from service.listing.versions import REDIS_ERRORS
from service.sources.base import ObjectInfo

logger = logging.getLogger(__name__)

#: (day, when the LIST started) -> None; the cache's own re-validation of one day
Revalidate = Callable[[Day, datetime], Awaitable[None]]


def same_listing(a: Sequence[ObjectInfo], b: Sequence[ObjectInfo]) -> bool:
    """Equal for an archive: the same keys, sizes, validators and dates (a CRC learned
    since is not a change)."""
    return len(a) == len(b) and all(
        (x.key, x.size, x.etag, x.mtime) == (y.key, y.size, y.etag, y.mtime)
        for x, y in zip(a, b, strict=True)
    )


class RefreshAhead:
    def __init__(
        self,
        *,
        source_id: str,
        redis: aioredis.Redis | None,
        interval_s: float,
        revalidate: Revalidate,
        clock: Callable[[], datetime],
    ) -> None:
        self._source_id = source_id
        self._clock = clock
        self._redis = redis
        self.interval_s = interval_s
        self._revalidate = revalidate
        self._due: dict[str, tuple[datetime, datetime, Day]] = {}
        self._next: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, item: Day, due: datetime, expires: datetime) -> None:
        """Re-validate `item` once a request uses it at or after `due` (and before its
        listing `expires`: after that the request lists it anyway)."""
        if len(self._due) >= LISTING_KNOWN_VERSIONS_MAX_DAYS:
            self._due.clear()
        self._due[item.key] = (due, expires, Day(0, item.prefix, item.day, item.token))
        self._next = due if self._next is None else min(self._next, due)

    def poll(self, days: Sequence[tuple[int, str, date]], tokens: Sequence[str], now: datetime) -> None:
        """Called by every request with its (index, prefix, day)s and their tokens: starts
        the due re-validations (never awaited). O(1) while nothing is due."""
        if self._next is None or now < self._next:
            return
        for (index, prefix, day), token in zip(days, tokens, strict=True):
            key = Day(index, prefix, day, token).key
            entry = self._due.get(key)
            if entry is not None and entry[0] <= now:
                del self._due[key]
                if now >= entry[1]:
                    continue  # expired: this very request lists it
                task = asyncio.create_task(self._run(entry[2]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self._next = min((due for due, _, _ in self._due.values()), default=None)

    async def _run(self, item: Day) -> None:
        try:
            if not await self._claim(item):
                return  # another process re-validates it this interval
            await self._revalidate(item, self._clock())
        except ZipedgeError as exc:
            logger.info("could not re-validate the listing of %s: %s", item.day, exc.message)
        except Exception:  # a background task must not die silently
            logger.exception("re-validating the listing of %s failed", item.day)

    async def _claim(self, item: Day) -> bool:
        if self._redis is None:
            return True
        try:
            async with asyncio.timeout(LISTING_REDIS_OP_TIMEOUT_S):
                claimed = await self._redis.set(
                    refresh_key(self._source_id, item.day, item.token),
                    b"1",
                    nx=True,
                    ex=max(1, int(self.interval_s)),
                )
        except REDIS_ERRORS:
            return False  # Redis is down: the listing simply expires
        return bool(claimed)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait for the re-validations running now (tests)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


def due_after(listed_at: datetime, ttl_s: float, fraction: float) -> tuple[datetime, datetime]:
    """(when to re-validate, when it expires) of a listing taken at `listed_at`."""
    return listed_at + timedelta(seconds=ttl_s * fraction), listed_at + timedelta(seconds=ttl_s)
