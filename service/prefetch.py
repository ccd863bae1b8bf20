"""Fetch an archive's objects ahead of the writer: concurrently, handed over in order,
within a byte budget, resuming a broken read from the first byte not yet received.

Workers claim entries in manifest order, but only an entry that fits whole in the budget
beside those claimed and not yet written (or the head): hundreds of small photos are in
flight at once, a few large objects each at full speed. They read in chunks into
per-entry slots. Before each read a worker reserves the bytes it may receive;
reservations beyond the budget wait, except for the entry the writer is on (the
*head*), which may always keep up to two chunks buffered. So memory stays under
`budget + 2 chunks` per stream whatever the archive size, and the writer can never
starve behind objects further ahead.

Only this module and `service.writer` know about the budget; sources just yield chunks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio
from opentelemetry.context import Context

from service import tracing
from service.archive.manifest import Entry
from service.constants import (
    FETCH_ATTEMPTS,
    FETCH_BACKOFF_BASE_S,
    FETCH_BACKOFF_MAX_S,
    PREFETCH_HEAD_ALLOWANCE_BYTES,
    READ_CHUNK_BYTES,
)
from service.exceptions import ObjectChanged, SourceError, StreamAborted
from service.metrics import SOURCE_ERRORS, SOURCE_RETRIES
from service.sources.base import closing

logger = logging.getLogger(__name__)

#: Opens one entry's bytes from `offset` up to `stop` (exclusive; None: the object's end);
#: the etag travels inside the entry.
OpenFn = Callable[[Entry, int, int | None], AsyncIterator[bytes]]


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes `start` to `stop` (exclusive) of one entry's object: the whole of it for a
    full archive, part of it for a ranged answer."""

    entry: Entry
    start: int
    stop: int

    @classmethod
    def whole(cls, entry: Entry) -> Span:
        return cls(entry, 0, entry.size)

    @property
    def size(self) -> int:
        return self.stop - self.start


class _Slot:
    __slots__ = ("buffered", "chunks", "done", "error", "received", "waiter")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0  # bytes handed over so far: where a retry resumes
        self.done = False
        self.error: BaseException | None = None
        #: the writer waiting for this entry's next chunk, if it is
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Room:
    """Tasks waiting until a condition on the budget holds. Without a lock (one event loop,
    and every change is synchronous): a change calls `changed()`, which wakes only the
    waiters whose condition now holds; each checks it again when it runs."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def wait_for(self, holds: Callable[[], bool]) -> None:
        while not holds():
            future = asyncio.get_running_loop().create_future()
            entry = (holds, future)
            self._waiters.append(entry)
            try:
                await future
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    def changed(self) -> None:
        if not self._waiters:
            return
        still = []
        for entry in self._waiters:
            holds, future = entry
            if holds():
                if not future.done():
                    future.set_result(None)
            else:
                still.append(entry)
        self._waiters = still


class Prefetcher:
    """Use as `async with Prefetcher(...) as p:` then, for i = 0, 1, 2 ... in order, either
    `async for chunk in p.chunks(i)` or `p.take(i)` until it returns b"" (`await p.wait(i)`
    when it returns None). Leaving the block cancels every fetch at once."""

    def __init__(
        self,
        spans: Sequence[Span],
        open_: OpenFn,
        *,
        concurrency: int,
        budget: int,
        attempts: int = FETCH_ATTEMPTS,
        backoff_base: float = FETCH_BACKOFF_BASE_S,
        backoff_max: float = FETCH_BACKOFF_MAX_S,
        trace: Context | None = None,
    ) -> None:
        self._spans = spans
        #: the parent of a span per fetch (the stream's); None: no fetch spans at all
        self._trace = trace
        self._open = open_
        self._concurrency = max(1, concurrency)
        self._budget = max(budget, READ_CHUNK_BYTES)
        self._attempts = max(1, attempts)
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._slots = [_Slot() for _ in spans]
        self._next = 0
        self._head = 0
        self._used = 0
        #: bytes of claimed entries the writer has not taken yet (admission, see _worker)
        self._outstanding = 0
        self._room = _Room()
        self._tasks: list[asyncio.Task[None]] = []
        #: reads resumed after a failure (for metrics and tests)
        self.retries = 0
        #: peak bytes held (for tests of the budget)
        self.peak_buffered = 0
        #: peak entries claimed and not yet written, the head included (for tests)
        self.peak_ahead = 0

    async def __aenter__(self) -> Prefetcher:
        workers = min(self._concurrency, len(self._spans))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Shielded: this runs while the response is being cancelled (client gone) and
        # must still wait for the fetches to let go of their connections.
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for slot in self._slots:
            slot.chunks.clear()
        self._used = 0

    @property
    def buffered(self) -> int:
        return self._used

    # -- consumer side --------------------------------------------------------------------

    def take(self, index: int) -> bytes | None:
        """Entry `index`'s next chunk if it is here, b"" once the entry is over (the next
        one is then the head), None if it has not arrived yet (`await wait(index)`).
        Raises StreamAborted if the entry cannot be read."""
        if index != self._head:
            raise RuntimeError("entries must be consumed in order")
        slot = self._slots[index]
        if slot.chunks:
            chunk = slot.chunks.popleft()
            n = len(chunk)
            slot.buffered -= n
            self._used -= n
            self._outstanding -= n
            self._room.changed()
            return chunk
        if slot.error is not None:
            entry = self._spans[index].entry
            message = getattr(slot.error, "message", str(slot.error))
            raise StreamAborted(f"cannot read {entry.ref!r}: {message}") from slot.error
        if slot.done:
            self._head = index + 1
            self._room.changed()
            return b""
        return None

    async def wait(self, index: int) -> None:
        """Until entry `index` has a chunk, is over or failed."""
        slot = self._slots[index]
        if slot.chunks or slot.done or slot.error is not None:
            return
        slot.waiter = asyncio.get_running_loop().create_future()
        try:
            await slot.waiter
        finally:
            slot.waiter = None

    async def chunks(self, index: int) -> AsyncGenerator[bytes, None]:
        """Entry `index`'s bytes, in order; raises StreamAborted if it cannot be read."""
        while True:
            chunk = self.take(index)
            if chunk is None:
                await self.wait(index)
            elif chunk:
                yield chunk
            else:
                return

    # -- worker side --------------------------------------------------------------------

    def _fits(self, index: int, n: int) -> bool:
        if self._used + n <= self._budget:
            return True
        return index == self._head and self._slots[index].buffered + n <= PREFETCH_HEAD_ALLOWANCE_BYTES

    async def _reserve(self, index: int, n: int) -> None:
        if not self._fits(index, n):
            await self._room.wait_for(lambda: self._fits(index, n))
        self._used += n
        self.peak_buffered = max(self.peak_buffered, self._used)

    def _admissible(self) -> bool:
        index = self._next
        if index >= len(self._spans) or index == self._head:
            return True
        return self._outstanding + self._spans[index].size <= self._budget

    async def _worker(self) -> None:
        while True:
            # Claim the next entry only if all of it fits in the budget beside the entries
            # already claimed (or the writer is on it): otherwise many large objects would
            # each be partly read, the budget full of their heads, and the one the writer
            # needs would crawl at a 1/N share of the bandwidth.
            if not self._admissible():
                await self._room.wait_for(self._admissible)
            if self._next >= len(self._spans):
                return
            index = self._next
            self._next += 1
            self._outstanding += self._spans[index].size
            self.peak_ahead = max(self.peak_ahead, self._next - self._head)
            slot = self._slots[index]
            try:
                await self._fetch(index, slot)
                slot.done = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed to the writer, which aborts the stream
                SOURCE_ERRORS.labels(getattr(exc, "code", type(exc).__name__)).inc()
                slot.error = exc
            slot.wake()
            if slot.error is not None:
                return  # the stream is over; the writer will stop at this entry

    async def _fetch(self, index: int, slot: _Slot) -> None:
        if self._trace is None:
            await self._fetch_untraced(index, slot)
            return
        span = self._spans[index]
        attributes: tracing.Attributes = {"zipedge.key": span.entry.ref}
        if span.size != span.entry.size:
            attributes = {**attributes, "zipedge.offset": span.start, "zipedge.length": span.size}
        fetch = tracing.start("fetch", attributes, parent=self._trace)
        retries = self.retries
        try:
            await self._fetch_untraced(index, slot)
        except BaseException as exc:
            tracing.end(
                fetch, {"zipedge.bytes": slot.received, "zipedge.retries": self.retries - retries}, error=exc
            )
            raise
        tracing.end(fetch, {"zipedge.bytes": slot.received, "zipedge.retries": self.retries - retries})

    async def _fetch_untraced(self, index: int, slot: _Slot) -> None:
        span = self._spans[index]
        entry = span.entry
        failures = 0
        while slot.received < span.size:
            resumed_at = slot.received
            try:
                await self._read_from(index, slot)
                if slot.received < span.size:
                    raise ObjectChanged(
                        f"{entry.ref!r} ended after {span.start + slot.received} of {entry.size} bytes"
                    )
            except SourceError as exc:
                # Attempts count failures in a row: a long object on a flaky link that
                # keeps making progress is not given up on.
                failures = 1 if slot.received > resumed_at else failures + 1
                if not exc.retryable or failures >= self._attempts:
                    raise
                self.retries += 1
                SOURCE_RETRIES.inc()
                delay = min(self._backoff_base * 2 ** (failures - 1), self._backoff_max)
                logger.warning(
                    "retrying %s from byte %d in %.1fs: %s",
                    entry.ref,
                    span.start + slot.received,
                    delay,
                    exc.message,
                )
                await asyncio.sleep(delay)

    async def _read_from(self, index: int, slot: _Slot) -> None:
        """Read span `index` from `slot.received` to its end. A failure keeps the bytes
        already handed over: the retry resumes after them."""
        span = self._spans[index]
        entry = span.entry
        stop = None if span.stop == entry.size else span.stop
        async with closing(self._open(entry, span.start + slot.received, stop)) as body:
            while slot.received < span.size:
                want = min(READ_CHUNK_BYTES, span.size - slot.received)
                await self._reserve(index, want)
                try:
                    chunk = await anext(body)
                except StopAsyncIteration:
                    self._used -= want
                    return
                except BaseException:
                    self._used -= want
                    raise
                if slot.received + len(chunk) > span.size:
                    if stop is None:
                        self._used -= want
                        raise ObjectChanged(f"{entry.ref!r} is larger than the {entry.size} bytes listed")
                    chunk = chunk[: span.size - slot.received]  # a source that sent past the part
                self._used += len(chunk) - want
                if not chunk:
                    continue
                slot.received += len(chunk)
                slot.chunks.append(chunk)
                slot.buffered += len(chunk)
                slot.wake()
            if stop is not None:
                return  # a part: what follows is none of this span's business
            # The object must end where the manifest says; a longer one changed.
            extra = await anext(body, b"")
            if extra:
                raise ObjectChanged(f"{entry.ref!r} is larger than the {entry.size} bytes listed")
