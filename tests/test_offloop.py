"""Large selections are resolved off the event loop: which thread does the work, and what
the garbage collector may do meanwhile (no timing: counts, thread ids and thresholds)."""

from __future__ import annotations

import gc
import json
import threading
from datetime import date
from typing import Any

import pytest
from starlette.requests import Request

from service import offloop
from service.archive import jsonpieces, manifest
from service.archive.selection import DateRange
from service.constants import GC_HELD_OFF_THRESHOLD, MANIFEST_INLINE_ENTRIES, MANIFEST_INLINE_JSON_BYTES
from service.listing import DirectListings
from service.resolver import Limits, Resolver
from service.sources.memory import MemorySource
from service.web.bodies import read_json

MANY = MANIFEST_INLINE_ENTRIES + 500


def resolver(source: MemorySource) -> Resolver:
    return Resolver(
        source,
        DirectListings(source),
        None,
        source_id="memory:",
        limits=Limits(max_entries=100_000, max_bytes=1 << 40),
        http_allow=frozenset(),
    )


def many_photos() -> MemorySource:
    source = MemorySource()
    for i in range(MANY):
        source.put(f"2025/01/0{1 + i % 3}/CAR{i:05d}.jpg", b"x")
    return source


@pytest.fixture
def digests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(kind, thread id) of every archive or objects id computed."""
    seen: list[tuple[str, int]] = []
    real = manifest._digest

    def recording(kind: str, *args: Any) -> str:
        seen.append((kind, threading.get_ident()))
        return real(kind, *args)

    monkeypatch.setattr(manifest, "_digest", recording)
    return seen


async def test_a_large_ranges_ids_are_computed_off_the_loop(digests: list[tuple[str, int]]) -> None:
    built = await resolver(many_photos()).date_range(DateRange(date(2025, 1, 1), date(2025, 1, 3)))
    assert len(built.entries) == MANY
    # Both ids (the objects id: the cache lookup and a deferred HEAD's job id), neither on
    # the loop's thread, and not again when asked for.
    assert {kind for kind, _ in digests} == {"bytes", "objects"}
    assert threading.get_ident() not in {thread for _, thread in digests}
    # What the headers and the cache ask for was computed with them, in the build.
    assert {"archive_id", "objects_id", "layout", "last_modified", "content_bytes"} <= vars(built).keys()
    _ = built.archive_id, built.objects_id, built.layout
    assert len(digests) == 2


async def test_a_large_posts_manifest_is_built_off_the_loop(digests: list[tuple[str, int]]) -> None:
    source = many_photos()
    body = {"entries": [{"key": key} for key in source.objects]}
    built = await resolver(source).posted(body)
    assert len(built.entries) == MANY
    assert {kind for kind, _ in digests} == {"bytes", "objects"}
    assert threading.get_ident() not in {thread for _, thread in digests}


async def test_a_small_selection_stays_on_the_loop(digests: list[tuple[str, int]]) -> None:
    source = MemorySource()
    source.put("2025/01/01/a.jpg", b"a")
    await resolver(source).date_range(DateRange(date(2025, 1, 1), date(2025, 1, 1)))
    assert {thread for _, thread in digests} == {threading.get_ident()}  # no thread hop for one


async def test_no_full_collection_while_a_large_pass_runs_then_what_lives_is_frozen() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    during: list[tuple[int, int, int]] = []

    def work() -> list[object]:
        during.append(gc.get_threshold())
        return [object() for _ in range(100)]

    kept = await offloop.off_loop(MANY, work)
    assert during == [(before[0], before[1], GC_HELD_OFF_THRESHOLD)]
    assert gc.get_threshold() == before  # restored
    assert gc.get_freeze_count() >= frozen + len(kept)


async def test_nested_quiet_collectors_restore_only_at_the_end() -> None:
    before = gc.get_threshold()
    with offloop.quiet_collector():
        with offloop.quiet_collector():
            pass
        assert gc.get_threshold()[2] == GC_HELD_OFF_THRESHOLD  # the outer one still runs
    assert gc.get_threshold() == before


def request_with(body: bytes) -> Request:
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return Request(scope, receive)


@pytest.mark.parametrize("large", [False, True])
async def test_a_large_body_is_decoded_off_the_loop(monkeypatch: pytest.MonkeyPatch, large: bool) -> None:
    threads: list[int] = []
    real = jsonpieces.loads

    def recording(blob: bytes | str) -> Any:
        threads.append(threading.get_ident())
        return real(blob)

    monkeypatch.setattr(jsonpieces, "loads", recording)
    count = 20_000 if large else 10
    doc = {"entries": [{"key": f"2025/01/01/{i:06d}.jpg"} for i in range(count)]}
    body = json.dumps(doc).encode()
    assert (len(body) > MANIFEST_INLINE_JSON_BYTES) is large
    assert await read_json(request_with(body)) == doc
    if large:
        assert threads and threading.get_ident() not in threads
    else:
        assert threads == []  # a small body: one `json.loads` on the loop


async def test_a_deep_large_body_is_refused() -> None:
    from service.exceptions import InvalidParameter

    deep = {"entries": [{"key": "a", "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}
    body = json.dumps(deep).encode() + b" " * MANIFEST_INLINE_JSON_BYTES
    with pytest.raises(InvalidParameter, match="nests deeper"):
        await read_json(request_with(body))
