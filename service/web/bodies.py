"""Request bodies: JSON, size- and depth-limited before it is decoded; and work that stops
when the client that asked for it has left."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from itertools import accumulate
from typing import Any, TypeVar

from starlette.requests import Request

from service.archive import jsonpieces
from service.constants import MANIFEST_INLINE_JSON_BYTES, MAX_JSON_DEPTH, MAX_POST_BODY_BYTES
from service.exceptions import InvalidParameter, TooLarge
from service.offloop import in_worker

T = TypeVar("T")

#: A JSON string, escapes included: what may hold brackets that nest nothing.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest (0 for a scalar), in C-speed
    passes and one over the brackets alone: a few ms for a 4 MB body."""
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


async def read_json(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_POST_BODY_BYTES:
        raise TooLarge(f"the request body is larger than {MAX_POST_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_POST_BODY_BYTES:
            raise TooLarge(f"the request body is larger than {MAX_POST_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if len(body) <= MANIFEST_INLINE_JSON_BYTES:
        if nesting(body) > MAX_JSON_DEPTH:
            raise _too_deep()
        return decode(body, json.loads)

    # A posted archive of 100,000 entries is ~6 MB: its nesting's regular expression (one
    # C call: ~0.7 s) and `json.loads` (one C call: ~0.2 s) would each hold the GIL, the
    # loop's too, all along. Decoded in a worker thread instead, in pieces, with no full
    # collection meanwhile; the C decoder's own recursion limit bounds a deep body until
    # the decoded value's depth is checked.
    def work() -> Any:
        value = decode(body, jsonpieces.loads)
        if jsonpieces.depth(value) > MAX_JSON_DEPTH:
            raise _too_deep()
        return value

    return await in_worker(work)


def _too_deep() -> InvalidParameter:
    return InvalidParameter(f"the body's JSON nests deeper than {MAX_JSON_DEPTH} levels")


def decode(body: bytes, loads: Callable[[bytes], Any]) -> Any:
    """`loads(body)`, its errors as `InvalidParameter`."""
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"the body is not valid JSON: {exc}") from None
    except RecursionError:  # the inline path checked the nesting first; the other relies on this
        raise InvalidParameter("the body's JSON is nested too deeply") from None


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result, or None if the client disconnected first: then `work` is cancelled
    (with every lookup it started). Call it once the body has been read: from then on the
    server's next message on the request is the disconnect."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (watcher, task):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        if task.cancelled() or not task.done():
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return None
    return task.result()
