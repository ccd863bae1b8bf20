"""An archive slice: exactly the bytes a single `Range` asks for, fetching only what
overlaps it.

`Layout.pieces` says what the window is made of. Local headers and the end records are
computed; member data is fetched with ranged reads (`Span`s through the `Prefetcher`), a
member cut by the window only in part; a data descriptor or central record needs its
member's CRC-32: from the manifest or the object index when known, from the bytes just
streamed when the window holds the whole member, and otherwise by reading that member
whole (counted in `zipedge_range_crc_reads_total`), concurrently with the rest of the
window so the first bytes are not held up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence

from opentelemetry.context import Context

from service.archive.layout import Layout, Piece
from service.archive.manifest import Manifest
from service.archive.ranges import ByteRange
from service.exceptions import StreamAborted
from service.metrics import RANGE_CRC_READS
from service.prefetch import OpenFn, Prefetcher, Span
from service.sources.base import closing
from service.writer import Learned, check_crc, crc32


async def _whole_crc(manifest: Manifest, index: int, open_: OpenFn) -> int:
    entry = manifest.entries[index]
    crc = 0
    size = 0
    async with closing(open_(entry, 0, None)) as chunks:
        async for chunk in chunks:
            crc = crc32(chunk, crc)
            size += len(chunk)
    if size != entry.size:
        raise StreamAborted(f"{entry.ref!r} has {size} bytes, the archive promised {entry.size}")
    return crc


class _Crcs:
    """Every CRC the window needs, known or being read."""

    def __init__(
        self,
        manifest: Manifest,
        known: Sequence[int | None],
        open_: OpenFn,
        concurrency: int,
        learned: Learned,
    ) -> None:
        self._manifest = manifest
        self._open = open_
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._learned = learned
        self.values: dict[int, int] = {i: crc for i, crc in enumerate(known) if crc is not None}
        self._reads: dict[int, asyncio.Task[int]] = {}

    def start(self, indexes: set[int]) -> None:
        for index in sorted(indexes - self.values.keys()):
            self._reads[index] = asyncio.create_task(self._read(index))

    async def _read(self, index: int) -> int:
        async with self._slots:
            RANGE_CRC_READS.inc()
            crc = await _whole_crc(self._manifest, index, self._open)
        check_crc(self._manifest.entries[index], crc)
        self._learned(index, crc)
        return crc

    async def get(self, index: int) -> int:
        if index not in self.values:
            self.values[index] = await self._reads[index]
        return self.values[index]

    async def aclose(self) -> None:
        for task in self._reads.values():
            task.cancel()
        await asyncio.gather(*self._reads.values(), return_exceptions=True)


async def write_slice(
    manifest: Manifest,
    window: ByteRange,
    open_: OpenFn,
    *,
    known: Sequence[int | None],
    concurrency: int,
    budget: int,
    learned: Learned,
    trace: Context | None = None,
) -> AsyncGenerator[bytes, None]:
    """Archive bytes `window.start` to `window.stop`. `known[i]` is member i's CRC-32 when
    known (the manifest's, or the index's since); `learned` hears the CRCs computed here."""
    layout = manifest.layout
    pieces = layout.pieces(window.start, window.stop)
    entries = manifest.entries
    whole = {p.index for p in pieces if p.kind == "data" and p.start == 0 and p.stop == entries[p.index].size}
    wanted: set[int] = set()
    for piece in pieces:
        if piece.kind == "descriptor":
            wanted.add(piece.index)
        elif piece.kind == "directory":
            wanted.update(layout.directory_members(piece.start, piece.stop))
    crcs = _Crcs(manifest, known, open_, concurrency, learned)
    crcs.start(wanted - whole)
    spans = [Span(entries[p.index], p.start, p.stop) for p in pieces if p.kind == "data"]
    sent = 0
    try:
        async with Prefetcher(
            spans, open_, concurrency=concurrency, budget=budget, trace=trace
        ) as prefetcher:
            data_index = 0
            for piece in pieces:
                async for block in _piece_bytes(piece, data_index, layout, prefetcher, crcs, whole, learned):
                    sent += len(block)
                    yield block
                if piece.kind == "data":
                    data_index += 1
    finally:
        await crcs.aclose()
    if sent != len(window):
        raise StreamAborted(f"wrote {sent} bytes of a {len(window)}-byte range")


async def _piece_bytes(
    piece: Piece,
    data_index: int,
    layout: Layout,
    prefetcher: Prefetcher,
    crcs: _Crcs,
    whole: set[int],
    learned: Learned,
) -> AsyncGenerator[bytes, None]:
    if piece.kind == "header":
        yield layout.local_header(piece.index)[piece.start : piece.stop]
    elif piece.kind == "data":
        crc = 0
        async with contextlib.aclosing(prefetcher.chunks(data_index)) as chunks:
            async for chunk in chunks:
                if piece.index in whole:
                    crc = crc32(chunk, crc)
                yield chunk
        if piece.index in whole and piece.index not in crcs.values:
            crcs.values[piece.index] = crc
            learned(piece.index, crc)
    elif piece.kind == "descriptor":
        crc = await crcs.get(piece.index)
        yield layout.data_descriptor(piece.index, crc)[piece.start : piece.stop]
    else:
        members = layout.directory_members(piece.start, piece.stop)
        values = {i: await crcs.get(i) for i in members}
        yield layout.directory_slice(piece.start, piece.stop, values.__getitem__)
