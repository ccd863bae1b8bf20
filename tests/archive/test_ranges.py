"""Range and If-Range, as RFC 9110 §14 and §13.1.5 have them."""

from __future__ import annotations

import pytest

from service.archive.ranges import ByteRange, if_range_holds, parse_range
from service.exceptions import RangeNotSatisfiable

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 1)),
        ("bytes=0-499", (0, 500)),
        ("bytes=500-", (500, 1000)),
        ("bytes=-100", (900, 1000)),
        ("bytes=-5000", (0, 1000)),  # a suffix longer than the archive: all of it
        ("bytes=990-5000", (990, 1000)),  # an end past the end is cut
        ("bytes=999-999", (999, 1000)),
        ("Bytes = 10 - 20", (10, 21)),
    ],
)
def test_one_range(header: str, expected: tuple[int, int]) -> None:
    found = parse_range(header, SIZE)
    assert found == ByteRange(*expected, SIZE)
    assert found is not None and found.content_range == f"bytes {expected[0]}-{expected[1] - 1}/{SIZE}"


@pytest.mark.parametrize(
    "header",
    [None, "", "bytes=0-1,5-6", "items=0-1", "bytes=", "bytes=-", "bytes=a-b", "bytes=5-1", "bytes 0-1"],
)
def test_what_is_answered_whole(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, SIZE)
    assert caught.value.size == SIZE and caught.value.status_code == 416


def test_if_range() -> None:
    etag, date = '"abc"', "Sun, 05 Jan 2025 08:30:15 GMT"
    assert if_range_holds(None, etag=etag, last_modified=date)
    assert if_range_holds('"abc"', etag=etag, last_modified=date)
    assert not if_range_holds('"other"', etag=etag, last_modified=date)
    assert not if_range_holds('W/"abc"', etag=etag, last_modified=date)
    assert if_range_holds(date, etag=etag, last_modified=date)
    assert not if_range_holds("Mon, 06 Jan 2025 08:30:15 GMT", etag=etag, last_modified=date)
