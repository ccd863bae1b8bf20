"""Byte ranges of an archive (RFC 9110 §14): what a `Range` asks for and whether an
`If-Range` still holds.

One range is served (`206`); several are answered with the whole archive (`200`), which
RFC 9110 allows and every download manager handles; a header the server may ignore
(another unit, bad syntax) is ignored. Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.exceptions import RangeNotSatisfiable

_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes `start` to `stop` (exclusive) of an archive of `size` bytes."""

    start: int
    stop: int
    size: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range `header` asks for within `size` bytes, or None to answer the whole
    archive. Raises `RangeNotSatisfiable` when nothing of it lies within the archive."""
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in specs:
        return None
    match = _SPEC.fullmatch(specs)
    if match is None or not (match[1] or match[2]):
        return None
    first, last = match[1], match[2]
    if first:
        start = int(first)
        stop = min(int(last) + 1, size) if last else size
        if last and int(last) < start:
            return None  # syntactically invalid: ignored (RFC 9110 §14.1.1)
    else:
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable("an empty suffix range", size=size)
        start, stop = max(size - suffix, 0), size
    if start >= size:
        raise RangeNotSatisfiable(f"range starts at byte {start} of a {size}-byte archive", size=size)
    return ByteRange(start, stop, size)


def if_range_holds(header: str | None, *, etag: str, last_modified: str) -> bool:
    """Whether an `If-Range` lets the range be served: no header, the same strong ETag,
    or exactly the same Last-Modified date. Otherwise the whole archive is sent."""
    if header is None:
        return True
    value = header.strip()
    if value.startswith('"'):
        return value == etag
    if value.startswith("W/"):
        return False  # a weak validator never matches (RFC 9110 §13.1.5)
    return value == last_modified
