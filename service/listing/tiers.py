"""The in-process tier of day listings: a budget of objects, least recently used first,
and whole ranges kept for repeat requests."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from aiocache import SimpleMemoryCache

from service.constants import LISTING_INLINE_CODEC_BYTES, LISTING_RANGES_KEPT
from service.listing.keys import OFFLINE
from service.sources.base import ObjectInfo


@dataclass(frozen=True, slots=True)
class Entry:
    objects: tuple[ObjectInfo, ...]
    expires: datetime


@dataclass(frozen=True, slots=True)
class KeptRange:
    """A whole `list_days` answer taken from the in-process tier, kept so that a repeated
    range skips the per-day lookups: valid while its days' tokens are unchanged and until
    the earliest of its entries expires, i.e. exactly as long as the tier would answer
    the same. `weight` counts objects (+1 a day) against the tier's budget."""

    tokens: tuple[str, ...]
    listings: tuple[tuple[ObjectInfo, ...], ...]
    expires: datetime
    weight: int


@dataclass(slots=True)
class Day:
    """One day prefix of a `list_days` call: where its result goes and its cache key."""

    index: int
    prefix: str
    day: date
    token: str = OFFLINE

    @property
    def key(self) -> str:
        """In-process key (the tier belongs to one source, so no source part)."""
        return f"{self.day.isoformat()}:{self.token}"


class LocalTier:
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

    async def get_many(self, keys: Sequence[str], now: datetime) -> list[Entry | None]:
        if not keys:
            return []
        values: list[Any] = await self._cache.multi_get(list(keys))
        found: list[Entry | None] = []
        for key, value in zip(keys, values, strict=True):
            if isinstance(value, Entry) and value.expires > now:
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
        await self._cache.set(key, Entry(objects, now + timedelta(seconds=ttl_s)), ttl=ttl_s)
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


async def run_codec(func: Callable[[], Any], size: int) -> Any:
    """Run a CPU-bound encode/decode inline when small, in a worker thread when large."""
    if size <= LISTING_INLINE_CODEC_BYTES:
        return func()
    return await asyncio.to_thread(func)


class KeptRanges:
    """Whole `list_days` answers taken from the in-process tier (see `KeptRange`), bounded
    by count and by the objects they hold."""

    def __init__(self, max_objects: int) -> None:
        self._ranges: OrderedDict[tuple[str, ...], KeptRange] = OrderedDict()
        self._objects = 0
        self._max_objects = max_objects

    def get(self, key: tuple[str, ...], tokens: tuple[str, ...], now: datetime) -> KeptRange | None:
        kept = self._ranges.get(key)
        if kept is None or kept.tokens != tokens or now >= kept.expires:
            return None
        self._ranges.move_to_end(key)
        return kept

    def keep(
        self,
        key: tuple[str, ...],
        tokens: tuple[str, ...],
        results: Sequence[tuple[ObjectInfo, ...] | None],
        expires: datetime,
    ) -> None:
        listings = tuple(r for r in results if r is not None)
        old = self._ranges.pop(key, None)
        if old is not None:
            self._objects -= old.weight
        kept = KeptRange(tokens, listings, expires, sum(len(day) for day in listings) + len(listings))
        if kept.weight > self._max_objects:
            return
        self._ranges[key] = kept
        self._objects += kept.weight
        while self._objects > self._max_objects or len(self._ranges) > LISTING_RANGES_KEPT:
            _, dropped = self._ranges.popitem(last=False)
            self._objects -= dropped.weight
