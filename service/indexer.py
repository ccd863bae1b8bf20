"""`zipedge index`: learn the CRC-32 of every object of some days that the object index
does not know yet, so that every archive of them has all CRCs in its local headers and
its live stream answers ranges without reading outside them.

Each object whose CRC is unknown is read once, whole, `concurrency` at a time; what is
learned is recorded day by day (and the day's listing refreshed), so an interrupted run
loses at most the day it was on and a second run skips everything already known.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.archive.manifest import Entry
from service.archive.selection import DateRange
from service.exceptions import DependencyUnavailable, SourceError
from service.index import Known
from service.objects import Objects
from service.runtime import Runtime
from service.sources.base import ObjectInfo, closing
from service.writer import crc32


@dataclass
class IndexReport:
    """What one run did, as it goes (for progress lines) and at the end."""

    days: int = 0
    objects: int = 0  #: objects listed on those days
    known: int = 0  #: already in the index
    learned: int = 0
    failed: list[str] = field(default_factory=list)
    bytes_read: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self, day: str) -> str:
        rate = self.learned / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{day}: {self.objects} objects so far, {self.known} already known, {self.learned} learned "
            f"({rate:.0f} objects/s, {self.bytes_read / 1e6 / max(self.seconds, 1e-9):.0f} MB/s), "
            f"{len(self.failed)} failed"
        )


async def _crc_of(objects: Objects, info: ObjectInfo) -> tuple[int, int]:
    entry = Entry(info.key, "key", info.key, info.size, info.etag, info.mtime)
    crc, size = 0, 0
    async with closing(objects.open(entry, 0)) as chunks:
        async for chunk in chunks:
            crc = crc32(chunk, crc)
            size += len(chunk)
    return crc, size


async def index_days(
    runtime: Runtime,
    selection: DateRange,
    *,
    concurrency: int,
    progress: Callable[[str], None] = lambda line: None,
) -> IndexReport:
    report = IndexReport()
    objects = Objects(runtime.source, runtime.origin, runtime.listings)
    slots = asyncio.Semaphore(max(1, concurrency))
    for day, prefix in zip(selection.days(), selection.prefixes(), strict=True):
        (listing,) = await runtime.listings.list_days([prefix])
        report.days += 1
        report.objects += len(listing)
        todo = [info for info in listing if info.crc32 is None]
        report.known += len(listing) - len(todo)
        found = await asyncio.gather(*(_learn(objects, info, slots, report) for info in todo))
        facts = [fact for fact in found if fact is not None]
        if facts:
            await runtime.index.record(runtime.source_id, facts)
            try:
                await runtime.listings.bump(day)
            except DependencyUnavailable as exc:
                report.failed.append(f"{day}: learned, but its listing could not be refreshed: {exc.message}")
        progress(report.line(day.isoformat()))
    return report


async def _learn(
    objects: Objects, info: ObjectInfo, slots: asyncio.Semaphore, report: IndexReport
) -> Known | None:
    async with slots:
        try:
            crc, size = await _crc_of(objects, info)
        except SourceError as exc:
            report.failed.append(f"{info.key}: {exc.message}")
            return None
    if size != info.size:
        report.failed.append(f"{info.key}: {size} bytes read, {info.size} listed (changed)")
        return None
    report.learned += 1
    report.bytes_read += size
    return Known(info.key, info.etag, crc)
