"""The first stage of a stream: an archive entry's bytes, wherever the object lives.

Keys are read from the source root, URLs from the HTTP origins. A key whose object turns
out changed or gone (written behind the listing cache's back) invalidates its day's
listing, so the next request lists it afresh instead of failing the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from service.archive.manifest import Entry
from service.exceptions import ConfigError, ObjectChanged, ObjectMissing
from service.listing import Listings
from service.sources.base import Reader, Source, closing


class Objects:
    def __init__(self, source: Source, origin: Reader | None, listings: Listings) -> None:
        self._source = source
        self._origin = origin
        self._listings = listings

    async def open(self, entry: Entry, offset: int, stop: int | None = None) -> AsyncIterator[bytes]:
        """The entry's bytes from `offset` to `stop` (exclusive; None: its end), checked
        against its ETag."""
        length = None if stop is None else stop - offset
        if entry.kind == "url":
            if self._origin is None:
                raise ConfigError("URL entries need ZIPEDGE_HTTP_ALLOW")
            reading = self._origin.read(entry.ref, offset=offset, etag=entry.etag, length=length)
            async with closing(reading) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        try:
            reading = self._source.read(entry.ref, offset=offset, etag=entry.etag, length=length)
            async with closing(reading) as chunks:
                async for chunk in chunks:
                    yield chunk
        except (ObjectChanged, ObjectMissing):
            await self._listings.invalidate(entry.ref)
            raise
