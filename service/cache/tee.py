"""Copy a stream into the cache without ever slowing or failing the client's download.

`Tee` owns one cache write: a task drains a bounded queue into the `CacheWriter`. The
stream *offers* chunks: if the cache write lags more than `max_lag` bytes behind, if it
fails, or if the build lock is lost, the tee is dropped (the multipart upload aborted)
and the client never notices. Only a stream that ran to completion gets committed, and
the writer itself refuses to commit a byte count other than the promised one.

`Build` runs the archive writer in an app-owned task and hands chunks to the client
through a small queue. That decoupling is what lets a build outlive its client: when the
client leaves, the build either goes on for the cache alone (so the retry gets a
redirect) or is cancelled, as the configured policy says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from enum import StrEnum

from service import tracing
from service.cache.base import CacheWriter
from service.cache.lock import Lease
from service.constants import BUILD_CLIENT_QUEUE_CHUNKS
from service.exceptions import StreamAborted, ZipedgeError
from service.metrics import CACHE_WRITES
from service.sources.base import closing

logger = logging.getLogger(__name__)


class TeeOutcome(StrEnum):
    #: running
    PENDING = "pending"
    #: this build published the cache object
    COMMITTED = "committed"
    #: the object existed already (another builder won): nothing to do
    EXISTS = "exists"
    #: given up (lag, lock lost, stream failed or cancelled); upload aborted
    DROPPED = "dropped"
    #: the cache write itself failed; upload aborted
    FAILED = "failed"


class Tee:
    def __init__(self, writer: CacheWriter, lease: Lease, *, max_lag: int, archive_id: str = "") -> None:
        self._writer = writer
        self._lease = lease
        self._max_lag = max_lag
        self._archive_id = archive_id
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._finished = False
        self.drop_reason = ""
        self.outcome = TeeOutcome.PENDING
        self.task = asyncio.create_task(self._run())

    @property
    def dropped(self) -> bool:
        return bool(self.drop_reason)

    def offer(self, chunk: bytes) -> None:
        """Queue a chunk, or drop the tee if it lags or lost its lock. Never waits."""
        if self.dropped:
            return
        if self._lease.lost.is_set():
            self.drop("build lock lost")
        elif self._queued + len(chunk) > self._max_lag:
            self.drop(f"cache write lagging more than {self._max_lag} bytes")
        else:
            self._push(chunk)

    async def put(self, chunk: bytes) -> None:
        """Queue a chunk, waiting for room (a build with no client left to keep pace with)."""
        while not self.dropped and self._queued and self._queued + len(chunk) > self._max_lag:
            self._room.clear()
            await self._room.wait()
        if self._lease.lost.is_set():
            self.drop("build lock lost")
        if not self.dropped:
            self._push(chunk)

    def _push(self, chunk: bytes) -> None:
        self._queue.append(chunk)
        self._queued += len(chunk)
        self._wake.set()

    def finish(self) -> None:
        """The stream is complete: commit once everything queued is written."""
        self._finished = True
        self._wake.set()

    def drop(self, reason: str) -> None:
        if not self.dropped:
            self.drop_reason = reason
            logger.info("cache write of %s dropped: %s", self._archive_id, reason)
        self._wake.set()
        self._room.set()

    async def _run(self) -> None:
        try:
            while True:
                while self._queue and not self.dropped:
                    chunk = self._queue.popleft()
                    self._queued -= len(chunk)
                    self._room.set()
                    await self._writer.write(chunk)
                if self.dropped:
                    break
                if self._finished:
                    if not await self._lease.confirm():
                        self.drop("build lock lost")
                        break
                    with tracing.span("tee commit", {"zipedge.objects_id": self._archive_id}):
                        published = await self._writer.commit()
                        tracing.set_attributes({"zipedge.published": published})
                    self.outcome = TeeOutcome.COMMITTED if published else TeeOutcome.EXISTS
                    return
                self._wake.clear()
                await self._wake.wait()
            self.outcome = TeeOutcome.DROPPED
            await self._writer.abort()
        except ZipedgeError as exc:
            self.outcome = TeeOutcome.FAILED
            logger.warning("cache write of %s failed: %s", self._archive_id, exc.message)
            self.drop_reason = self.drop_reason or exc.message
            await self._writer.abort()
        except BaseException:
            self.outcome = TeeOutcome.DROPPED
            await self._writer.abort()
            raise
        finally:
            CACHE_WRITES.labels(self.outcome.value).inc()
            self._queue.clear()
            self._room.set()
            await asyncio.shield(self._lease.release())


_END = object()


class Build:
    """An archive being written by an app-owned task, for a client and the cache.

    Whatever ends the producer reaches the client: the end marker, or an error (any
    exception, not only ours, and a cancellation too), so `client_chunks` never waits on
    a producer that is gone."""

    def __init__(self, chunks: AsyncIterator[bytes], tee: Tee) -> None:
        self._chunks = chunks
        self.tee = tee
        self.attached = True
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=BUILD_CLIENT_QUEUE_CHUNKS)
        self.task = asyncio.create_task(self._produce())

    async def _produce(self) -> None:
        try:
            async with closing(self._chunks) as body:
                async for chunk in body:
                    if self.attached:
                        self.tee.offer(chunk)
                        await self._queue.put(chunk)
                    elif self.tee.dropped:
                        return  # nobody to serve and nothing to cache
                    else:
                        await self.tee.put(chunk)
            self.tee.finish()
            if self.attached:
                await self._queue.put(_END)
        except ZipedgeError as exc:
            self.tee.drop(f"stream failed: {exc.message}")
            self._fail(exc)
        except Exception as exc:  # a bug below: the client must still see the end
            logger.exception("archive build crashed")
            self.tee.drop(f"stream crashed: {exc!r}")
            self._fail(StreamAborted(f"internal error: {exc!r}"))
        except BaseException:
            self.tee.drop("build cancelled")
            self._fail(StreamAborted("the build was stopped"))
            raise

    def _fail(self, error: BaseException) -> None:
        """Hand `error` to the client at once: what it has not taken yet is dropped (the
        connection is cut anyway), so this never waits."""
        if not self.attached:
            return
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(error)

    async def client_chunks(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item

    def detach(self, *, finish: bool) -> None:
        """The client is gone. Keep building for the cache (`finish`) or stop now."""
        if self.task.done():
            return
        self.attached = False
        while not self._queue.empty():  # unblock a producer waiting for the client
            self._queue.get_nowait()
        if not finish or self.tee.dropped:
            self.task.cancel()

    async def wait(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(self.task, self.tee.task, return_exceptions=True)
