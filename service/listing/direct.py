"""What the resolver needs of day listings, and the uncached implementation.

The folder source (the embedded default) is listed directly on every request: listing a
folder is cheap, and photos dropped in by hand must show up at once. S3 sources go through
`DayListingCache`, which offers the same `list_days`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import date
from typing import Protocol

from service.constants import LIST_CONCURRENCY
from service.exceptions import DependencyUnavailable
from service.index import Known, ObjectIndex
from service.index.memory import MemoryObjectIndex
from service.listing.keys import day_of_key
from service.offloop import off_loop
from service.sources.base import ObjectInfo, Source

logger = logging.getLogger(__name__)


async def list_with_crcs(
    source: Source, index: ObjectIndex, source_id: str, prefix: str
) -> tuple[ObjectInfo, ...]:
    """One prefix's objects, each with the CRC-32 the index knows for it (one batched
    lookup): what lets an archive of them carry every CRC in its local headers."""
    objects = await source.list(prefix)

    def unknown_of() -> list[int]:
        return [i for i, o in enumerate(objects) if o.crc32 is None]

    # A busy day holds 10,000 objects or more: each pass over them leaves the loop.
    unknown = await off_loop(len(objects), unknown_of)
    if not unknown:
        return tuple(objects)
    named = await off_loop(len(unknown), lambda: [(objects[i].key, objects[i].etag) for i in unknown])
    crcs = await index.lookup(source_id, named)

    def with_crcs() -> tuple[ObjectInfo, ...]:
        for i, crc in zip(unknown, crcs, strict=True):
            if crc is not None:
                o = objects[i]
                objects[i] = ObjectInfo(o.key, o.size, o.etag, o.mtime, crc)
        return tuple(objects)

    return await off_loop(len(unknown), with_crcs)


class Listings(Protocol):
    #: True when the same day gives the identical tuple until it changes (memo-friendly).
    stable: bool
    #: where listed objects' CRCs are looked up
    index: ObjectIndex

    async def list_days(self, prefixes: Sequence[str]) -> list[tuple[ObjectInfo, ...]]:
        """Every prefix's objects, in order; the first source error is raised."""
        ...

    async def invalidate(self, key: str) -> None:
        """An object under `key` was found changed or gone: forget what was listed."""
        ...

    async def bump(self, day: date) -> int:
        """A writer changed this day: every process must re-list it."""
        ...

    async def aclose(self) -> None: ...


async def learn(listings: Listings, source_id: str, facts: Sequence[Known]) -> None:
    """Record `facts` in the object index and bump their days, so that the next archive of
    those days, listed again, carries the CRCs in its local headers."""
    if not facts:
        return
    await listings.index.record(source_id, facts)
    for day in sorted({d for fact in facts if (d := day_of_key(fact.key)) is not None}):
        try:
            await listings.bump(day)
        except DependencyUnavailable as exc:
            logger.warning("learned CRCs of %s, but could not refresh its listing: %s", day, exc.message)


class DirectListings:
    """Lists each day from the source, `LIST_CONCURRENCY` at a time; remembers nothing."""

    stable = False

    def __init__(self, source: Source, *, source_id: str = "", index: ObjectIndex | None = None) -> None:
        self.source = source
        self.source_id = source_id
        self.index = index or MemoryObjectIndex()

    async def list_days(self, prefixes: Sequence[str]) -> list[tuple[ObjectInfo, ...]]:
        semaphore = asyncio.Semaphore(LIST_CONCURRENCY)

        async def one(prefix: str) -> tuple[ObjectInfo, ...]:
            async with semaphore:
                return await list_with_crcs(self.source, self.index, self.source_id, prefix)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(prefix)) for prefix in prefixes]
        return [task.result() for task in tasks]

    async def invalidate(self, key: str) -> None:
        return None  # nothing kept

    async def bump(self, day: date) -> int:
        return 0

    async def aclose(self) -> None:
        return None
