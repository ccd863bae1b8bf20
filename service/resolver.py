"""Selections become manifests: list the day prefixes of a date range, or stat the keys
and URLs of a posted archive (each distinct object once, concurrently), then apply names
and limits. Large manifests are built in a worker thread: the name policy, the id and the
layout cost ~30 us an entry, which for 200,000 entries would freeze every other request
on the event loop for seconds.

A posted archive's work is bounded by what it names: it is deduplicated before any IO,
keys of a day that holds many of them are found in that day's (cached) listing rather
than by a HEAD each, and the rest is looked up by `STAT_CONCURRENCY` workers. Cancelling
`posted` (its client left) stops every lookup at once."""

from __future__ import annotations

import asyncio
import posixpath
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from service import tracing
from service.archive.manifest import Candidate, Kind, Manifest, build_manifest
from service.archive.names import validate_key
from service.archive.selection import DateRange
from service.constants import (
    MAX_POSTED_ENTRIES,
    MEMO_MAX_ENTRIES,
    MEMO_MAX_MANIFESTS,
    POSTED_DAY_LISTING_MIN_KEYS,
    STAT_CONCURRENCY,
)
from service.exceptions import HostNotAllowed, InvalidParameter, NothingSelected, TooLarge
from service.index import Known
from service.listing import Listings, day_of_key, learn
from service.offloop import off_loop
from service.sources.base import ObjectInfo, Reader, Source
from service.sources.urlguard import validate_url

T = TypeVar("T")
R = TypeVar("R")


async def _bounded_map(items: Sequence[T], func: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    """`func` over `items` by at most `limit` workers (not a task per item: 100,000 of
    those cost more than the lookups); results in input order; the first error cancels
    the rest."""
    results: list[R | None] = [None] * len(items)
    positions = iter(range(len(items)))

    async def worker() -> None:
        for position in positions:
            results[position] = await func(items[position])

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(limit, len(items))):
                group.create_task(worker())
    except ExceptionGroup as group_error:
        # Callers want the error itself (an ObjectNotFound is a 404), not a group.
        first: BaseException = group_error
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return results  # type: ignore[return-value]  # every position was filled


@dataclass(frozen=True, slots=True)
class Limits:
    max_entries: int
    max_bytes: int

    def check(self, count: int, total: int) -> None:
        if count > self.max_entries:
            raise TooLarge(f"the selection has {count} objects; the limit is {self.max_entries}")
        if total > self.max_bytes:
            raise TooLarge(f"the selection has {total} bytes; the limit is {self.max_bytes}")


#: A date range's day listings, as `Listings.list_days` gives them.
DayObjects = tuple[tuple[ObjectInfo, ...], ...]


async def build_off_loop(candidates: Sequence[Candidate], *, source: str, filename: str) -> Manifest:
    """`build_manifest`, with its ids and layout computed too; in a worker thread when
    large (the thread holds the GIL only in slices, so the loop keeps serving)."""
    return await off_loop(len(candidates), lambda: _built(candidates, source=source, filename=filename))


def _built(candidates: Sequence[Candidate], *, source: str, filename: str) -> Manifest:
    manifest = build_manifest(candidates, source=source, filename=filename)
    # Computed here, not later on the loop: each is a pass over every entry (the objects id
    # decides a deferred HEAD's job id and the cache lookup; the headers give the newest mtime).
    _ = (
        manifest.archive_id,
        manifest.objects_id,
        manifest.layout,
        manifest.last_modified,
        manifest.content_bytes,
    )
    return manifest


class _ManifestMemo:
    """Recent date-range manifests, keyed by the download name and the *identity* of the
    day listings they were built from. A repeat click on a cached range then costs a
    listing lookup and a dict hit, not the name policy over every entry again (measured:
    ~6 ms of CPU for 600 entries), nor hashing every object (~0.1 ms for 150).

    Identity is exact: `DayListingCache` hands out the same immutable tuple for a day until
    it re-lists it, and a re-listed day is a new tuple, so a changed object is a miss. An
    entry keeps its listings alive, so their ids cannot be reused while it exists."""

    def __init__(self, max_entries: int = MEMO_MAX_ENTRIES, max_manifests: int = MEMO_MAX_MANIFESTS) -> None:
        self._items: OrderedDict[tuple[str, tuple[int, ...]], tuple[DayObjects, Manifest]] = OrderedDict()
        self._entries = 0
        self._max_entries = max_entries
        self._max_manifests = max_manifests

    @staticmethod
    def _key(filename: str, listings: DayObjects) -> tuple[str, tuple[int, ...]]:
        return filename, tuple(map(id, listings))

    def get(self, filename: str, listings: DayObjects) -> Manifest | None:
        key = self._key(filename, listings)
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[1]

    def put(self, filename: str, listings: DayObjects, manifest: Manifest) -> None:
        key = self._key(filename, listings)
        size = len(manifest.entries)
        if key in self._items or size > self._max_entries:
            return
        self._items[key] = (listings, manifest)
        self._entries += size
        while self._entries > self._max_entries or len(self._items) > self._max_manifests:
            _, (_, old) = self._items.popitem(last=False)
            self._entries -= len(old.entries)


class Resolver:
    def __init__(
        self,
        source: Source,
        listings: Listings,
        origin: Reader | None,
        *,
        source_id: str,
        limits: Limits,
        http_allow: frozenset[str],
    ) -> None:
        self._source = source
        self._listings = listings
        self._origin = origin
        self._source_id = source_id
        self._limits = limits
        self._http_allow = http_allow
        self._memo = _ManifestMemo()

    async def date_range(self, selection: DateRange) -> Manifest:
        prefixes = selection.prefixes()
        with tracing.span("listing", {"zipedge.days": len(prefixes)}):
            listings = tuple(await self._listings.list_days(prefixes))
        filename = selection.filename()
        if not self._listings.stable:
            return await self._build(selection, listings)
        manifest = self._memo.get(filename, listings)
        if manifest is None:
            manifest = await self._build(selection, listings)
            self._memo.put(filename, listings, manifest)
        return manifest

    async def _build(self, selection: DateRange, listings: DayObjects) -> Manifest:
        count = sum(map(len, listings))
        if not count:
            raise NothingSelected(f"no objects between {selection.start} and {selection.end}")
        filename = selection.filename()

        def build() -> Manifest:
            objects = [info for day in listings for info in day]
            self._limits.check(len(objects), sum(o.size for o in objects))
            candidates = [Candidate("key", o.key, o.key, o.size, o.etag, o.mtime, o.crc32) for o in objects]
            return _built(candidates, source=self._source_id, filename=filename)

        return await off_loop(count, build)

    async def posted(self, body: Any) -> Manifest:
        """A `POST /v1/archives` body: {"name": ..., "entries": [{"key"|"url", "name"?}]}."""
        if not isinstance(body, dict):
            raise InvalidParameter("the body must be a JSON object")
        raw_entries = body.get("entries")
        if not isinstance(raw_entries, list) or not raw_entries:
            raise InvalidParameter("'entries' must be a non-empty list")
        if len(raw_entries) > min(MAX_POSTED_ENTRIES, self._limits.max_entries):
            raise TooLarge(f"at most {min(MAX_POSTED_ENTRIES, self._limits.max_entries)} entries per archive")
        filename = body.get("name", "archive.zip")
        if not isinstance(filename, str) or not filename.strip():
            raise InvalidParameter("'name' must be a non-empty string")
        if not filename.lower().endswith(".zip"):
            filename += ".zip"

        def parse() -> tuple[list[tuple[Kind, str, str]], list[tuple[Kind, str]], dict[str, list[str]]]:
            # Key and URL checks cost ~5-20 us an entry.
            refs = [self._parse_entry(position, item) for position, item in enumerate(raw_entries)]
            # Each distinct object is looked up once, however often it is named.
            distinct = list(dict.fromkeys((kind, ref) for kind, ref, _ in refs))
            return refs, distinct, _by_day([ref for kind, ref in distinct if kind == "key"])

        refs, distinct, by_day = await off_loop(len(raw_entries), parse)
        found = await self._from_listings(by_day)
        missing = await off_loop(len(distinct), lambda: [item for item in distinct if item not in found])
        found.update(zip(missing, await _bounded_map(missing, self._stat, STAT_CONCURRENCY), strict=True))
        await self._learn_stored_crcs([found[item] for item in missing if item[0] == "key"])

        def build() -> Manifest:
            infos = [found[kind, ref] for kind, ref, _ in refs]
            self._limits.check(len(infos), sum(i.size for i in infos))
            candidates = [
                Candidate(kind, ref, name, info.size, info.etag, info.mtime, info.crc32)
                for (kind, ref, name), info in zip(refs, infos, strict=True)
            ]
            return _built(candidates, source=self._source_id, filename=filename)

        return await off_loop(len(refs), build)

    async def _learn_stored_crcs(self, stats: list[ObjectInfo]) -> None:
        """The full-object CRC-32s storage gave with the keys' HEADs go into the object
        index (those it does not know yet, so a repeated post bumps no day): a later
        date-range archive of these objects then needs no data descriptors, before any
        stream has read them."""
        facts = [Known(info.key, info.etag, info.crc32) for info in stats if info.crc32 is not None]
        if not facts:
            return
        index = self._listings.index
        known = await index.lookup(self._source_id, [(fact.key, fact.validator) for fact in facts])
        await learn(
            self._listings,
            self._source_id,
            [fact for fact, crc in zip(facts, known, strict=True) if crc != fact.crc32],
        )

    async def _from_listings(self, by_day: dict[str, list[str]]) -> dict[tuple[Kind, str], ObjectInfo]:
        """The keys found in the listings of days that hold at least
        `POSTED_DAY_LISTING_MIN_KEYS` of them (one cached listing instead of many HEADs).
        A key its day's listing lacks (too new for it, or never there) is left to a HEAD."""
        prefixes = [prefix for prefix, named in by_day.items() if len(named) >= POSTED_DAY_LISTING_MIN_KEYS]
        if not prefixes:
            return {}
        with tracing.span("listing", {"zipedge.days": len(prefixes)}):
            listings = await self._listings.list_days(prefixes)

        def match() -> dict[tuple[Kind, str], ObjectInfo]:
            wanted = {key for prefix in prefixes for key in by_day[prefix]}
            found: dict[tuple[Kind, str], ObjectInfo] = {}
            for listing in listings:
                for info in listing:
                    if info.key in wanted:
                        found["key", info.key] = info
            return found

        return await off_loop(sum(map(len, listings)), match)

    def _parse_entry(self, position: int, item: Any) -> tuple[Kind, str, str]:
        where = f"entries[{position}]"
        if not isinstance(item, dict):
            raise InvalidParameter(f"{where} must be an object with 'key' or 'url'")
        name = item.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidParameter(f"{where}.name must be a non-empty string")
        if ("key" in item) == ("url" in item):
            raise InvalidParameter(f"{where} needs exactly one of 'key' or 'url'")
        if "key" in item:
            key = item["key"]
            if not isinstance(key, str):
                raise InvalidParameter(f"{where}.key must be a string")
            validate_key(key)
            return "key", key, name or key
        url = item["url"]
        if not isinstance(url, str):
            raise InvalidParameter(f"{where}.url must be a string")
        if self._origin is None:
            raise HostNotAllowed("URL entries are disabled: ZIPEDGE_HTTP_ALLOW is empty")
        url = validate_url(url, allow_hosts=self._http_allow)
        return "url", url, name or _url_name(url)

    async def _stat(self, ref: tuple[Kind, str]) -> ObjectInfo:
        kind, value = ref
        if kind == "key":
            return await self._source.stat(value)
        assert self._origin is not None
        return await self._origin.stat(value)


def _by_day(keys: list[str]) -> dict[str, list[str]]:
    """Keys by the day prefix they are under (`2025/01/05/`); keys under no day are left out."""
    by_day: dict[str, list[str]] = {}
    for key in keys:
        if day_of_key(key) is not None:
            by_day.setdefault(key[:11], []).append(key)
    return by_day


def _url_name(url: str) -> str:
    """The last path segment of a URL ("x.jpg"), or the host when there is none."""
    parts = urlsplit(url)
    name = posixpath.basename(unquote(parts.path.rstrip("/")))
    return name or parts.hostname or "download"
