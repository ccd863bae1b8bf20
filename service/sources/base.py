"""What every object source offers: list a prefix, stat one object, read it from an offset.

A *source* is the date-partitioned root (folder, S3 bucket, memory); an *origin* serves
absolute URLs (HTTP). Both read the same way, so the fetcher treats them alike.
Implementations translate their dependency's errors into `service.exceptions.SourceError`
subclasses (and `ObjectNotFound`/`InvalidKey` for a bad key at stat time).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from service.archive.names import validate_key
from service.exceptions import InvalidKey
from service.metrics import LISTING_SKIPPED

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a source sees it.

    `key` is relative to the source root (or the URL for an origin); `etag` is an opaque
    validator that changes whenever the content does ("" when the source has none);
    `mtime` is whole seconds since the Unix epoch, UTC; `crc32` is the full-object CRC-32
    when the source knows it without reading the body.
    """

    key: str
    size: int
    etag: str
    mtime: int
    crc32: int | None = None


class Reader(Protocol):
    async def stat(self, key: str) -> ObjectInfo:
        """Size and validators of one object; `ObjectNotFound` if it does not exist."""
        ...

    def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes from `offset` to the end (or `length` bytes of them), in
        chunks of at most `constants.READ_CHUNK_BYTES`. With a non-empty `etag`, raise
        `ObjectChanged` if the object no longer has it. Errors surface while iterating;
        callers close the iterator (`contextlib.aclosing`) so an abandoned read frees its
        connection."""
        ...

    async def aclose(self) -> None:
        """Release connections and clients."""
        ...


class Source(Reader, Protocol):
    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a day: `YYYY/MM/DD/`), sorted by key,
        including those in deeper folders. Pagination is the source's business."""
        ...

    async def check(self) -> None:
        """Raise `DependencyUnavailable` if the source cannot be reached (for /readyz)."""
        ...


def listable(key: str, *, where: str) -> bool:
    """Whether a listed key may go into an archive: exactly the keys a read accepts
    (`validate_key`), so one odd object name (`a\\b.jpg`, a `..` segment, a control
    character) is skipped with a log line and a metric instead of failing its whole day."""
    try:
        validate_key(key)
    except InvalidKey as exc:
        LISTING_SKIPPED.inc()
        logger.warning("skipping %r in %s: %s", key, where, exc.message)
        return False
    return True


class closing:
    """Like `contextlib.aclosing` for any byte iterator: an abandoned read (client gone,
    stream aborted) closes its generator at once, which releases the connection. A class,
    not a generator-based context manager: it is entered once or twice per object."""

    __slots__ = ("_stream",)

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream

    async def __aenter__(self) -> AsyncIterator[bytes]:
        return self._stream

    async def __aexit__(self, *exc_info: object) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()
