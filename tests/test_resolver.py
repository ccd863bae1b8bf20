"""The resolver's memo of date-range manifests, over a cached in-memory source."""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import date

from service.archive.selection import DateRange
from service.listing import DayListingCache, DirectListings
from service.resolver import Limits, Resolver
from service.sources.base import ObjectInfo
from service.sources.memory import MemorySource

RANGE = DateRange(date(2025, 1, 1), date(2025, 1, 3))


def make() -> tuple[Resolver, DayListingCache, MemorySource]:
    source = MemorySource()
    for day in (1, 2, 3):
        for i in range(3):
            source.put(f"2025/01/0{day}/CAR{i}.jpg", f"{day}{i}".encode())
    cache = DayListingCache(source, source_id="memory:")
    resolver = Resolver(
        source,
        cache,
        None,
        source_id="memory:",
        limits=Limits(max_entries=1000, max_bytes=1 << 30),
        http_allow=frozenset(),
    )
    return resolver, cache, source


async def test_a_repeat_range_reuses_its_manifest() -> None:
    resolver, _, _ = make()
    first = await resolver.date_range(RANGE)
    assert await resolver.date_range(RANGE) is first
    assert len(first.entries) == 9
    other = await resolver.date_range(DateRange(date(2025, 1, 2), date(2025, 1, 3)))
    assert other is not first and len(other.entries) == 6


async def test_a_changed_day_makes_a_new_manifest() -> None:
    resolver, cache, source = make()
    first = await resolver.date_range(RANGE)
    source.put("2025/01/02/LATE.jpg", b"late")
    assert await resolver.date_range(RANGE) is first  # not bumped: the listing is kept
    await cache.bump(date(2025, 1, 2))
    changed = await resolver.date_range(RANGE)
    assert changed.archive_id != first.archive_id
    assert "2025/01/02/LATE.jpg" in [entry.ref for entry in changed.entries]
    assert await resolver.date_range(RANGE) is changed


async def test_the_memo_is_bounded() -> None:
    resolver, _, _ = make()
    resolver._memo._max_manifests = 2
    ranges = [DateRange(date(2025, 1, d), date(2025, 1, 3)) for d in (1, 2, 3)]
    built = [await resolver.date_range(r) for r in ranges]
    assert await resolver.date_range(ranges[2]) is built[2]
    assert await resolver.date_range(ranges[0]) is not built[0]  # the oldest was dropped


class CountingSource(MemorySource):
    def __init__(self) -> None:
        super().__init__()
        self.stats: list[str] = []

    async def stat(self, key: str) -> ObjectInfo:
        self.stats.append(key)
        return await super().stat(key)


async def test_a_posted_archive_looks_each_distinct_object_up_once() -> None:
    source = CountingSource()
    source.put("2025/01/01/a.jpg", b"a")
    source.put("2025/01/01/b.jpg", b"bb")
    resolver = Resolver(
        source,
        DirectListings(source),
        None,
        source_id="memory:",
        limits=Limits(max_entries=100_000, max_bytes=1 << 30),
        http_allow=frozenset(),
    )
    entries = [{"key": "2025/01/01/a.jpg"}] * 5_000 + [{"key": "2025/01/01/b.jpg", "name": "x.jpg"}] * 3
    manifest = await resolver.posted({"entries": entries})
    assert sorted(source.stats) == ["2025/01/01/a.jpg", "2025/01/01/b.jpg"]
    assert len(manifest.entries) == 5_003
    assert manifest.entries[-1].name == "x (2).jpg" and manifest.entries[-1].size == 2


class StoredCrcSource(MemorySource):
    """A store that answers a HEAD with the object's full-object CRC-32 (S3 with
    ChecksumAlgorithm=CRC32)."""

    async def stat(self, key: str) -> ObjectInfo:
        info = await super().stat(key)
        return replace(info, crc32=zlib.crc32(self.objects[key][0]))


class BumpCounting(DirectListings):
    def __init__(self, source: MemorySource) -> None:
        super().__init__(source, source_id="memory:")
        self.bumped: list[date] = []

    async def bump(self, day: date) -> int:
        self.bumped.append(day)
        return len(self.bumped)


async def test_stored_crcs_of_posted_keys_are_recorded_once() -> None:
    source = StoredCrcSource()
    source.put("2025/01/01/a.jpg", b"a")
    source.put("misc/b.jpg", b"bb")
    listings = BumpCounting(source)
    resolver = Resolver(
        source,
        listings,
        None,
        source_id="memory:",
        limits=Limits(max_entries=100, max_bytes=1 << 30),
        http_allow=frozenset(),
    )
    body = {"entries": [{"key": "2025/01/01/a.jpg"}, {"key": "misc/b.jpg"}]}
    manifest = await resolver.posted(body)
    assert [entry.crc32 for entry in manifest.entries] == [zlib.crc32(b"a"), zlib.crc32(b"bb")]
    etags = [entry.etag for entry in manifest.entries]
    pairs = [("2025/01/01/a.jpg", etags[0]), ("misc/b.jpg", etags[1])]
    assert await listings.index.lookup("memory:", pairs) == [zlib.crc32(b"a"), zlib.crc32(b"bb")]
    assert listings.bumped == [date(2025, 1, 1)]  # the day whose listing lacked it; misc has none
    await resolver.posted(body)
    assert listings.bumped == [date(2025, 1, 1)]  # known already: nothing to refresh
