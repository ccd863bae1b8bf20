"""DayListingCache: day listings cached in process and in a real Redis, invalidated per day
by versions, shared between "processes" (two instances on one Redis), degrading to the
source when Redis goes away, and one source listing per day under a stampede."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest
from redis import asyncio as aioredis

from service.archive.manifest import Entry
from service.constants import (
    DEFAULT_LISTING_MAX_STALE_S,
    LISTING_LIVE_TTL_S,
    LISTING_REDIS_RETRY_AFTER_S,
    LISTING_REFRESH_AT_FRACTION,
    LISTING_VERSION_CHECK_S,
)
from service.exceptions import DependencyUnavailable, ObjectChanged, ObjectMissing, SourceUnavailable
from service.listing import DayListingCache, bump_day, day_of_key, parse_day_prefix
from service.listing.keys import (
    EPOCH_KEY,
    decode_listing,
    encode_listing,
    is_settled,
    listing_key,
    version_key,
)
from service.objects import Objects
from service.sources.base import ObjectInfo, closing
from service.sources.memory import MemorySource
from service.stack.redis import RedisServer

SOURCE_ID = "s3://photos/gate"
DAYS = ["2025/01/01/", "2025/01/02/", "2025/01/03/"]
TODAY = "2025/01/10/"
NOON = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)  # 2025-01-01..03 are settled, 01-10 is live
MAX_STALE_S = DEFAULT_LISTING_MAX_STALE_S
REFRESH_AT_S = MAX_STALE_S * LISTING_REFRESH_AT_FRACTION


@dataclass
class CountingSource(MemorySource):
    """A MemorySource that counts listings per prefix, can hold them at a gate (to make
    concurrent requests overlap) and can fail a prefix a number of times."""

    listed: Counter[str] = field(default_factory=Counter)
    gate: asyncio.Event | None = None
    #: set once this many different prefixes are being listed (held at the gate)
    waiting_for: int = 0
    all_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    failures: Counter[str] = field(default_factory=Counter)
    closed: bool = False

    async def list(self, prefix: str) -> list[ObjectInfo]:
        self.listed[prefix] += 1
        if len(self.listed) >= self.waiting_for:
            self.all_waiting.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures[prefix] > 0:
            self.failures[prefix] -= 1
            raise SourceUnavailable(f"listing {prefix} failed")
        return await super().list(prefix)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Clock:
    now: datetime = NOON

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def populate(objects: dict[str, tuple[bytes, int]]) -> None:
    """A few photos per day (different counts, one in a deeper folder) and a neighbour
    key that shares a day's prefix characters but not its folder."""
    for n, day in enumerate([*DAYS, TODAY]):
        for i in range(n + 2):
            objects[f"{day}CAR{i:03d}.jpg"] = (f"{day}{i}".encode() * 10, 1_736_000_000 + i)
    objects["2025/01/02/late/CAR999.jpg"] = (b"late", 1_736_000_500)
    objects["2025/01/022.jpg"] = (b"not a day folder", 1_736_000_000)


@pytest.fixture
def objects() -> dict[str, tuple[bytes, int]]:
    """The bucket: one dict shared by every source of a test (one per "process")."""
    found: dict[str, tuple[bytes, int]] = {}
    populate(found)
    return found


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    objects: dict[str, tuple[bytes, int]],
    clock: Clock,
    redis: aioredis.Redis | None = None,
    **kwargs: int,
) -> tuple[DayListingCache, CountingSource]:
    source = CountingSource(objects=objects)
    return DayListingCache(source, source_id=SOURCE_ID, redis=redis, now=clock, **kwargs), source


async def token(redis: aioredis.Redis, version: int) -> str:
    """The cache token of a day at `version` in the current Redis epoch."""
    epoch = await redis.get(EPOCH_KEY)
    assert isinstance(epoch, bytes)
    return f"{epoch.decode()}.{version}"


async def truth(prefixes: list[str], objects: dict[str, tuple[bytes, int]]) -> list[tuple[ObjectInfo, ...]]:
    """What the source itself says, uncached."""
    plain = MemorySource(objects=objects)
    return [tuple(await plain.list(p)) for p in prefixes]


# --- pure helpers -----------------------------------------------------------------------


def test_day_prefixes_are_recognised_strictly() -> None:
    assert parse_day_prefix("2025/01/05/") == date(2025, 1, 5)
    for other in ["2025/01/05", "2025/01/", "2025/02/30/", "0000/01/01/", "x/2025/01/05/", "2025/1/05/", ""]:
        assert parse_day_prefix(other) is None
    assert day_of_key("2025/01/05/sub/MH12.jpg") == date(2025, 1, 5)
    assert day_of_key("2025/01/05/") is None
    assert day_of_key("misc/2025/01/05/x.jpg") is None


def test_a_day_settles_an_hour_after_its_midnight() -> None:
    day = date(2025, 1, 10)
    assert not is_settled(day, datetime(2025, 1, 10, 23, 59, tzinfo=UTC))
    assert not is_settled(day, datetime(2025, 1, 11, 0, 59, tzinfo=UTC))
    assert is_settled(day, datetime(2025, 1, 11, 1, 0, tzinfo=UTC))
    assert not is_settled(date(2025, 1, 11), NOON)  # future
    assert not is_settled(date.max, NOON)


def test_keys_separate_sources_days_and_versions() -> None:
    key = version_key(SOURCE_ID, date(2025, 1, 5))
    assert key.startswith("zipedge:listing:v:") and key.endswith(":2025-01-05")
    assert version_key("s3://other", date(2025, 1, 5)) != key
    assert listing_key(SOURCE_ID, date(2025, 1, 5), "1") != listing_key(SOURCE_ID, date(2025, 1, 5), "2")
    assert "photos" not in key  # the source URL is hashed


def test_blob_round_trip_and_tampering() -> None:
    expires = NOON + timedelta(hours=1)
    listing = [
        ObjectInfo("2025/01/05/a.jpg", 10, "e1", 1_736_000_000, None),
        ObjectInfo("2025/01/05/ü/b.jpg", 0, "", 1_736_000_001, 0xFFFFFFFF),
    ]
    assert decode_listing(encode_listing(listing, expires), "2025/01/05/") == (expires, tuple(listing))
    assert decode_listing(encode_listing([], expires), "2025/01/05/") == (expires, ())
    with pytest.raises(ValueError):  # written for another day
        decode_listing(encode_listing(listing, expires), "2025/01/06/")
    with pytest.raises(ValueError):
        decode_listing(b"not zlib", "2025/01/05/")
    bad_rows = [
        b'[1,[["2025/01/05/a",-1,"e",1,null]]]',
        b'[1,[["2025/01/05/a",true,"e",1,null]]]',
        b'[1,[["2025/01/05/a",1,"e",1,4294967296]]]',
        b'[1,[["2025/01/05/a",1,"e",1]]]',
        b'["soon",[]]',
        b"{}",
    ]
    for text in bad_rows:
        with pytest.raises(ValueError):
            decode_listing(zlib.compress(text), "2025/01/05/")


# --- in process ---------------------------------------------------------------------------


async def test_repeat_of_past_days_lists_the_source_once(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    first = await cache.list_days(DAYS)
    assert first == await truth(DAYS, objects)
    assert await cache.list_days(DAYS) == first
    assert [tuple(await cache.list(p)) for p in DAYS] == first
    assert source.listed == Counter(DAYS)
    assert cache.stats.local_hits == 6

    clock.advance(REFRESH_AT_S - 1)  # not yet due for re-validation
    await cache.list_days(DAYS)
    assert source.listed == Counter(DAYS)
    clock.advance(MAX_STALE_S)  # no request meanwhile: the listing's life is over
    await cache.list_days(DAYS)
    assert source.listed == Counter({p: 2 for p in DAYS})


async def test_today_is_kept_only_briefly(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    cache, source = make(objects, clock)
    await cache.list(TODAY)
    await cache.list(TODAY)
    assert source.listed[TODAY] == 1
    objects[f"{TODAY}NEW.jpg"] = (b"new", 1_736_500_000)
    clock.advance(LISTING_LIVE_TTL_S)
    listing = await cache.list(TODAY)
    assert source.listed[TODAY] == 2
    assert f"{TODAY}NEW.jpg" in [o.key for o in listing]


async def test_yesterday_stays_live_through_the_late_upload_margin(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    clock.now = datetime(2025, 1, 11, 0, 30, tzinfo=UTC)
    cache, source = make(objects, clock)
    await cache.list(TODAY)  # yesterday by now
    clock.advance(LISTING_LIVE_TTL_S)
    await cache.list(TODAY)
    assert source.listed[TODAY] == 2
    clock.now = datetime(2025, 1, 11, 1, 0, tzinfo=UTC)
    await cache.list(TODAY)  # settled: kept up to the staleness bound from now on
    clock.advance(REFRESH_AT_S - 1)
    await cache.list(TODAY)
    assert source.listed[TODAY] == 3


async def test_bump_without_redis_relists_exactly_that_day(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    await cache.list_days(DAYS)
    objects["2025/01/02/NEW.jpg"] = (b"new", 1_736_500_000)
    assert await cache.bump(date(2025, 1, 2)) == 1
    listings = await cache.list_days(DAYS)
    assert listings == await truth(DAYS, objects)
    assert source.listed == Counter({"2025/01/01/": 1, "2025/01/02/": 2, "2025/01/03/": 1})


async def test_other_prefixes_are_listed_every_time(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    for _ in range(2):
        assert await cache.list_days(["2025/01/"]) == await truth(["2025/01/"], objects)
    assert source.listed["2025/01/"] == 2  # not a day: never cached
    with pytest.raises(ValueError):
        await cache.list("2025/01/")
    await cache.aclose()
    assert not source.closed  # the source belongs to whoever made it


async def test_order_duplicates_and_mixed_prefixes(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    prefixes = ["2025/01/03/", "2025/01/", "2025/01/01/", "2025/01/03/", "2030/01/01/"]
    expected = await truth(prefixes, objects)
    assert await cache.list_days(prefixes) == expected
    assert await cache.list_days(prefixes) == expected
    # Duplicates share one listing, the non-day prefix is never cached, empty days are.
    assert source.listed == Counter({"2025/01/03/": 1, "2025/01/01/": 1, "2030/01/01/": 1, "2025/01/": 2})
    assert await cache.list_days([]) == []


async def test_results_are_copies(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    cache, _ = make(objects, clock)
    first = await cache.list(DAYS[0])
    first.clear()
    assert tuple(await cache.list(DAYS[0])) == (await truth(DAYS[:1], objects))[0]


async def test_a_failed_listing_is_not_cached(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    cache, source = make(objects, clock)
    source.failures["2025/01/02/"] = 1
    with pytest.raises(SourceUnavailable):  # the error itself, not an ExceptionGroup
        await cache.list_days(DAYS)
    assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    assert source.listed["2025/01/02/"] == 2


async def test_the_in_process_tier_is_bounded(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    # Days weigh objects + 1: 3, 5 and 5. A budget of 10 holds the last two only.
    cache, source = make(objects, clock, local_max_objects=10)
    await cache.list_days(DAYS)
    await cache.list_days(DAYS[1:])
    assert source.listed == Counter(DAYS)
    await cache.list(DAYS[0])
    assert source.listed[DAYS[0]] == 2


async def stampede(cache: DayListingCache, source: CountingSource) -> None:
    """20 concurrent requests for the same days while the source holds every listing."""
    source.gate, source.waiting_for = asyncio.Event(), len(DAYS)
    requests = [asyncio.create_task(cache.list_days(DAYS)) for _ in range(20)]
    async with asyncio.timeout(30):  # a hang guard, not a timing assertion
        await source.all_waiting.wait()
    source.gate.set()
    results = await asyncio.gather(*requests)
    assert source.listed == Counter(DAYS)
    assert all(result == results[0] for result in results)
    assert results[0] == await truth(DAYS, source.objects)


async def test_stampede_lists_each_day_once(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    cache, source = make(objects, clock)
    await stampede(cache, source)
    # Nothing suspends before a request claims a day: every other request joined.
    assert cache.stats.joined == 19 * len(DAYS)


@pytest.mark.integration
async def test_stampede_with_redis_lists_each_day_once(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    cache, source = make(objects, clock, redis_client)
    await stampede(cache, source)


async def test_a_cancelled_request_does_not_cancel_the_shared_listing(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    source.gate, source.waiting_for = asyncio.Event(), len(DAYS)
    first = asyncio.create_task(cache.list_days(DAYS))
    second = asyncio.create_task(cache.list_days(DAYS))
    async with asyncio.timeout(30):
        await source.all_waiting.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    source.gate.set()
    assert await second == await truth(DAYS, objects)
    assert source.listed == Counter(DAYS)


async def test_aclose_stops_shared_listings(objects: dict[str, tuple[bytes, int]], clock: Clock) -> None:
    cache, source = make(objects, clock)
    source.gate, source.waiting_for = asyncio.Event(), len(DAYS)
    pending = asyncio.create_task(cache.list_days(DAYS))
    async with asyncio.timeout(30):
        await source.all_waiting.wait()
    await cache.aclose()
    with pytest.raises(SourceUnavailable):  # a 503 for the request, not a stray cancel
        await pending


async def change_behind_the_cache(cache: DayListingCache, objects: dict[str, tuple[bytes, int]]) -> str:
    """Overwrite a listed object without a bump; a read with the listed ETag fails and
    invalidates the day. Returns the key."""
    key = "2025/01/02/CAR001.jpg"
    (stale,) = [o for o in await cache.list("2025/01/02/") if o.key == key]
    objects[key] = (b"overwritten", stale.mtime)
    with pytest.raises(ObjectChanged):
        await read_through(cache, stale)
    return key


async def read_through(cache: DayListingCache, info: ObjectInfo) -> bytes:
    """Read one listed object the way a stream does (`Objects`, which tells the listing
    cache when an object changed or vanished behind its back)."""
    entry = Entry(info.key, "key", info.key, info.size, info.etag, info.mtime)
    async with closing(Objects(cache.source, None, cache).open(entry, 0)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def test_a_read_that_finds_a_change_invalidates_the_day(
    objects: dict[str, tuple[bytes, int]], clock: Clock
) -> None:
    cache, source = make(objects, clock)
    await cache.list_days(DAYS)
    await change_behind_the_cache(cache, objects)
    assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    assert source.listed == Counter({"2025/01/01/": 1, "2025/01/02/": 2, "2025/01/03/": 1})
    with pytest.raises(ObjectMissing):  # a vanished object does the same
        await read_through(cache, ObjectInfo("2025/01/03/gone.jpg", 1, "e", 0))
    await cache.list_days(DAYS)
    assert source.listed["2025/01/03/"] == 2


# --- with Redis ---------------------------------------------------------------------------


integration = pytest.mark.integration


@integration
async def test_redis_shares_listings_between_processes(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    a, source_a = make(objects, clock, redis_client)
    b, source_b = make(objects, clock, redis_client)
    listed = await a.list_days(DAYS)
    assert await b.list_days(DAYS) == listed == await truth(DAYS, objects)
    assert source_a.listed == Counter(DAYS)
    assert not source_b.listed
    assert b.stats.redis_hits == len(DAYS)
    # B keeps them in process now; the version MGET is all it asks Redis.
    assert await b.list_days(DAYS) == listed
    assert b.stats.local_hits == len(DAYS)
    ttl = await redis_client.ttl(listing_key(SOURCE_ID, date(2025, 1, 1), await token(redis_client, 0)))
    # Settled days are kept in Redis up to the staleness bound, not a day.
    assert LISTING_LIVE_TTL_S < ttl <= MAX_STALE_S


@integration
async def test_a_repeat_reads_two_keys_until_a_day_is_bumped(
    objects: dict[str, tuple[bytes, int]],
    clock: Clock,
    redis_client: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, source = make(objects, clock, redis_client)
    reads: list[int] = []
    real_mget = redis_client.mget

    async def mget(keys: list[str], *args: str) -> list[bytes | None]:
        reads.append(len(keys))
        return await real_mget(keys, *args)

    monkeypatch.setattr(redis_client, "mget", mget)
    assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    reads.clear()
    assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    assert reads == []  # versions read a moment ago are trusted
    clock.advance(LISTING_VERSION_CHECK_S)
    assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    assert reads == [2]  # then the epoch and the generation, not a version per day

    objects["2025/01/02/NEW.jpg"] = (b"uploaded", 1_736_500_000)
    await bump_day(redis_client, SOURCE_ID, date(2025, 1, 2))  # a writer in another process
    clock.advance(LISTING_VERSION_CHECK_S)
    reads.clear()
    assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    # The generation moved, or the bump was already heard on its channel (then the stamp
    # check is skipped): either way every version is read again.
    assert reads[:2] == [2, 2 + len(DAYS)] or reads[0] == 2 + len(DAYS)
    assert source.listed == Counter({"2025/01/01/": 1, "2025/01/02/": 2, "2025/01/03/": 1})


@integration
async def test_a_bump_relists_exactly_that_day_in_every_process(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    a, source_a = make(objects, clock, redis_client)
    b, source_b = make(objects, clock, redis_client)
    await a.list_days(DAYS)
    await b.list_days(DAYS)  # from Redis, now also in B's process
    assert not source_b.listed

    objects["2025/01/02/NEW.jpg"] = (b"uploaded", 1_736_500_000)
    assert await bump_day(redis_client, SOURCE_ID, date(2025, 1, 2)) == 1
    expected = await truth(DAYS, objects)
    assert await b.list_days(DAYS) != expected  # B trusts the versions it read, briefly
    clock.advance(LISTING_VERSION_CHECK_S)

    # B (the other process) misses exactly that day; A then finds B's new listing in Redis.
    assert await b.list_days(DAYS) == expected
    assert source_b.listed == Counter({"2025/01/02/": 1})
    assert await a.list_days(DAYS) == expected
    assert source_a.listed == Counter(DAYS)

    # A bump through the cache itself does the same, at once in its own process, and
    # keeps the version key alive.
    assert await a.bump(date(2025, 1, 2)) == 2
    assert await a.list_days(DAYS) == expected
    assert source_a.listed == Counter({"2025/01/01/": 1, "2025/01/02/": 2, "2025/01/03/": 1})
    assert await redis_client.ttl(version_key(SOURCE_ID, date(2025, 1, 2))) > 0


@integration
async def test_a_change_found_by_a_read_invalidates_the_day_everywhere(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    a, _ = make(objects, clock, redis_client)
    b, source_b = make(objects, clock, redis_client)
    await a.list_days(DAYS)
    await b.list_days(DAYS)
    await change_behind_the_cache(a, objects)
    clock.advance(LISTING_VERSION_CHECK_S)  # how long B may trust the versions it read
    assert await b.list_days(DAYS) == await truth(DAYS, objects)
    assert source_b.listed == Counter({"2025/01/02/": 1})


@integration
async def test_today_expires_quickly_in_redis_too(
    objects: dict[str, tuple[bytes, int]], clock: Clock, redis_client: aioredis.Redis
) -> None:
    a, source_a = make(objects, clock, redis_client)
    b, source_b = make(objects, clock, redis_client)
    await a.list(TODAY)
    await b.list(TODAY)
    assert not source_b.listed
    assert (
        0
        < await redis_client.ttl(listing_key(SOURCE_ID, date(2025, 1, 10), await token(redis_client, 0)))
        <= LISTING_LIVE_TTL_S
    )
    clock.advance(LISTING_LIVE_TTL_S)  # the blob's own expiry follows the injected clock
    await b.list(TODAY)
    assert source_b.listed[TODAY] == 1


@integration
async def test_large_days_go_through_redis(clock: Clock, redis_client: aioredis.Redis) -> None:
    objects: dict[str, tuple[bytes, int]] = {}
    for i in range(10_000):
        objects[f"2025/01/01/MH{i:05d}AB1234-083015.jpg"] = (i.to_bytes(4, "big"), 1_736_000_000 + i)
    a, _ = make(objects, clock, redis_client)
    b, source_b = make(objects, clock, redis_client)
    listed = await a.list_days(["2025/01/01/"])
    assert len(listed[0]) == 10_000
    assert await b.list_days(["2025/01/01/"]) == listed
    assert not source_b.listed
    size = await redis_client.strlen(listing_key(SOURCE_ID, date(2025, 1, 1), await token(redis_client, 0)))
    assert size < 1_000_000


@integration
async def test_a_bad_blob_or_version_in_redis_is_ignored(
    objects: dict[str, tuple[bytes, int]],
    clock: Clock,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await redis_client.set(EPOCH_KEY, b"e1")
    await redis_client.set(listing_key(SOURCE_ID, date(2025, 1, 1), "e1.0"), b"garbage")
    await redis_client.set(version_key(SOURCE_ID, date(2025, 1, 2)), b"not a number")
    cache, source = make(objects, clock, redis_client)
    with caplog.at_level(logging.WARNING, logger="service.listing"):
        assert await cache.list_days(DAYS) == await truth(DAYS, objects)
    assert source.listed == Counter(DAYS)
    assert "bad cached listing" in caplog.text and "bad listing version" in caplog.text


@integration
async def test_listing_survives_redis_going_away(
    objects: dict[str, tuple[bytes, int]],
    clock: Clock,
    private_redis_server: RedisServer,
    private_redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, source = make(objects, clock, private_redis_client)
    expected = await truth(DAYS, objects)
    assert await cache.list_days(DAYS) == expected
    private_redis_server.stop()

    with caplog.at_level(logging.WARNING, logger="service.listing"):
        # Versions read a moment ago are still trusted: Redis is not asked yet.
        assert await cache.list_days(DAYS) == expected
        assert source.listed == Counter(DAYS)
        clock.advance(LISTING_VERSION_CHECK_S)
        # Then, without versions, nothing cached under them can be trusted: the source
        # answers, and the in-process tier keeps that answer briefly.
        assert await cache.list_days(DAYS) == expected
        assert await cache.list_days(DAYS) == expected
        assert source.listed == Counter({p: 2 for p in DAYS})
        clock.advance(LISTING_LIVE_TTL_S)  # Redis is tried again, still away
        assert await cache.list_days(DAYS) == expected
        assert tuple(await cache.list(DAYS[0])) == expected[0]
        assert source.listed == Counter({DAYS[0]: 3, DAYS[1]: 3, DAYS[2]: 3})
    assert cache.stats.redis_errors == 2
    warnings = [r for r in caplog.records if r.name.startswith("service.listing")]
    assert len(warnings) == 1 and "redis unavailable" in warnings[0].getMessage()

    with pytest.raises(DependencyUnavailable):  # a writer must learn its bump was lost
        await cache.bump(date(2025, 1, 2))

    # Redis comes back on the same port, empty (no persistence): once the pause is over it
    # is used again. Its versions count from 0 again, so a new epoch keeps them from
    # matching what this process cached under the old ones: every day is listed once more.
    port = private_redis_server.port
    monkeypatch.setattr("service.stack.redis.free_port", lambda: port)
    private_redis_server.start()
    clock.advance(LISTING_REDIS_RETRY_AFTER_S)
    assert await cache.list_days(DAYS) == expected
    assert source.listed == Counter({p: 4 for p in DAYS})
    assert await cache.list_days(DAYS) == expected
    assert source.listed == Counter({p: 4 for p in DAYS})
    assert cache.stats.redis_errors == 2
    assert await cache.bump(date(2025, 1, 2)) == 1
    assert await cache.list_days(DAYS) == expected
    assert source.listed == Counter({DAYS[0]: 4, DAYS[1]: 5, DAYS[2]: 4})
    assert await private_redis_client.exists(
        listing_key(SOURCE_ID, date(2025, 1, 2), await token(private_redis_client, 1))
    )
