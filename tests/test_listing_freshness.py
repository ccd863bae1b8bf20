"""Listing freshness: a settled day changed behind zipedge's back is visible within
ZIPEDGE_LISTING_MAX_STALE_S, re-validated in the background (refresh-ahead) so requests
keep hitting the cache, with one LIST per day per interval across processes. The clock
is the cache's injectable one."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from redis import asyncio as aioredis

from service.listing import DayListingCache, parse_day_prefix
from tests.test_listing import (
    DAYS,
    MAX_STALE_S,
    NOON,
    REFRESH_AT_S,
    SOURCE_ID,
    Clock,
    CountingSource,
    make,
    populate,
    truth,
)

DAY = DAYS[0]
integration = pytest.mark.integration


@pytest.fixture
def objects() -> dict[str, tuple[bytes, int]]:
    found: dict[str, tuple[bytes, int]] = {}
    populate(found)
    return found


@pytest.fixture
def clock() -> Clock:
    return Clock()


def keys(listing: list[object]) -> list[str]:
    return [o.key for o in listing]  # type: ignore[attr-defined]


async def test_a_settled_day_is_revalidated_without_a_request_waiting(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    before = await cache.list(DAY)
    objects[f"{DAY}LATE.jpg"] = (b"late camera", 1_736_100_000)  # behind zipedge's back
    clock.advance(REFRESH_AT_S)
    source.gate = asyncio.Event()  # the background LIST is held: the request must not wait
    during = await asyncio.wait_for(cache.list(DAY), timeout=5)
    assert during == before
    assert source.listed[DAY] == 2  # the re-validation has started
    source.gate.set()
    await cache.refresh.settle()
    assert cache.stats.revalidations == 1 and cache.stats.revalidation_changes == 1
    after = await cache.list(DAY)  # changed: bumped, so listed afresh
    assert tuple(after) == (await truth([DAY], objects))[0]


async def test_an_unchanged_day_keeps_its_listing_and_lives_on(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    first = await cache.list_days([DAY])
    for _ in range(int(3 * MAX_STALE_S // REFRESH_AT_S)):  # steady traffic for 3 x max-stale
        clock.advance(REFRESH_AT_S)
        assert (await cache.list_days([DAY]))[0] is first[0]  # the same tuple (memo-friendly)
        await cache.refresh.settle()
    # Only background LISTs, one per interval; no request ever found the day expired.
    assert source.listed[DAY] == 1 + cache.stats.revalidations
    assert cache.stats.revalidation_changes == 0


async def test_with_steady_traffic_a_direct_write_shows_within_the_bound(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, _ = make(objects, clock)
    await cache.list(DAY)
    clock.advance(REFRESH_AT_S - 1)  # the worst moment: just re-validated... almost
    objects[f"{DAY}BACKFILL.jpg"] = (b"backfill", 1_736_100_000)
    waited = 0
    while f"{DAY}BACKFILL.jpg" not in keys(await cache.list(DAY)):
        await cache.refresh.settle()
        clock.advance(10)
        waited += 10
        assert waited <= MAX_STALE_S
    # And a deleted object leaves the listing within the same bound.
    del objects[f"{DAY}BACKFILL.jpg"]
    waited = 0
    while f"{DAY}BACKFILL.jpg" in keys(await cache.list(DAY)):
        await cache.refresh.settle()
        clock.advance(10)
        waited += 10
        assert waited <= MAX_STALE_S


async def test_without_traffic_the_listing_expires_at_the_bound(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    await cache.list(DAY)
    objects[f"{DAY}LATE.jpg"] = (b"late", 1_736_100_000)
    clock.advance(MAX_STALE_S)
    assert f"{DAY}LATE.jpg" in keys(await cache.list(DAY))
    assert cache.stats.revalidations == 0  # expired: listed by the request, not twice


async def test_a_shorter_bound_is_honoured(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    source = CountingSource(objects=objects)
    cache = DayListingCache(source, source_id=SOURCE_ID, now=clock, max_stale_s=20)
    await cache.list(DAY)
    objects[f"{DAY}LATE.jpg"] = (b"late", 1_736_100_000)
    clock.advance(20)
    assert f"{DAY}LATE.jpg" in keys(await cache.list(DAY))


@integration
async def test_one_list_per_day_per_interval_across_processes(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    caches = [make(objects, clock, redis_client) for _ in range(3)]
    for cache, _ in caches:
        await cache.list_days(DAYS)
    assert sum((source.listed for _, source in caches), Counter()) == Counter(DAYS)
    clock.advance(REFRESH_AT_S)
    for cache, _ in caches:  # every process is due; one claims each day
        await cache.list_days(DAYS)
    for cache, _ in caches:
        await cache.refresh.settle()
    total = sum((source.listed for _, source in caches), Counter())
    assert total == Counter({day: 2 for day in DAYS})
    # The re-validated listing went back to Redis with a new life: a process whose own
    # copy expires reads it there instead of listing.
    clock.advance(MAX_STALE_S - REFRESH_AT_S)
    fresh, fresh_source = make(objects, clock, redis_client)
    assert await fresh.list_days(DAYS) == await caches[0][0].list_days(DAYS)
    assert not fresh_source.listed


@integration
async def test_a_change_found_by_one_process_is_seen_by_all(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    (a, _), (b, _) = make(objects, clock, redis_client), make(objects, clock, redis_client)
    await a.list(DAY)
    await b.list(DAY)
    objects[f"{DAY}LATE.jpg"] = (b"late", 1_736_100_000)
    clock.advance(REFRESH_AT_S)
    await a.list(DAY)
    await a.refresh.settle()
    assert a.stats.revalidation_changes == 1
    clock.advance(1)  # past the versions' quarter-second trust
    assert f"{DAY}LATE.jpg" in keys(await b.list(DAY))


@integration
async def test_another_processs_bump_is_heard_without_waiting_for_the_version_check(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    (a, _), (b, _) = make(objects, clock, redis_client), make(objects, clock, redis_client)
    await a.list(DAY)
    await b.list(DAY)
    objects[f"{DAY}UPLOADED.jpg"] = (b"completed upload", 1_736_100_000)
    await asyncio.sleep(0.1)  # a's subscription is up
    await b.bump(parse_day_prefix(DAY))  # type: ignore[arg-type]
    for _ in range(100):  # the message arrives in well under a millisecond on loopback
        if f"{DAY}UPLOADED.jpg" in keys(await a.list(DAY)):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the bump was not heard")
    assert clock.now == NOON  # no version check was due: the message did it
    await a.aclose()
    await b.aclose()
