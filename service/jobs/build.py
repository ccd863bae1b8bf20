"""The body of every job: build one archive into the cache, exactly as a tee would
(multipart upload, commit only when complete, abort on any failure), reporting progress.

Shared by the saq worker and the in-process runner, so both behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from service import tracing
from service.archive.manifest import Manifest
from service.cache.base import ArchiveCache, CacheWriter, settle
from service.cache.lock import Lease
from service.constants import JOB_LOCK_POLL_S, JOB_PARTS_IN_FLIGHT, JOB_PROGRESS_INTERVAL_S
from service.exceptions import (
    BuildFailed,
    CacheError,
    CacheWriteFailed,
    DependencyUnavailable,
    JobCancelled,
    SourceError,
    StreamAborted,
)
from service.jobs.gate import CommitGate, Gate
from service.runtime import Runtime
from service.streams import Streams, cache_entry
from service.writer import Progress

logger = logging.getLogger(__name__)

Report = Callable[[Progress], Awaitable[None]]


def _retryable(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SourceError):
            return cause.retryable
        if isinstance(cause, DependencyUnavailable | CacheWriteFailed):
            return True
        cause = cause.__cause__
    return False


class ArchiveBuilder:
    def __init__(self, runtime: Runtime, streams: Streams) -> None:
        self._runtime = runtime
        self._streams = streams

    async def is_cached(self, manifest: Manifest) -> bool:
        cache = self._runtime.cache
        if cache is None:
            return False
        try:
            return await cache.lookup(manifest.objects_id) is not None
        except (CacheError, DependencyUnavailable) as exc:
            raise BuildFailed(exc.message, retryable=_retryable(exc)) from exc

    async def build(
        self,
        manifest: Manifest,
        report: Report,
        *,
        job_id: str = "",
        gate: CommitGate | None = None,
        queued_at: float | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> None:
        """Return once the archive is in the cache; raise BuildFailed otherwise, or
        JobCancelled when `gate` says job `job_id` was cancelled before the commit. `report`
        is awaited about once a second (it is the heartbeat too).

        Traced as a "job" span (a child of the submitting request's trace when `trace`
        carries it) with "queued" (since `queued_at`, seconds since the epoch), "build" and
        "commit" children."""
        started = time.time()
        attributes: tracing.Attributes = {
            "zipedge.job_id": job_id,
            "zipedge.archive_id": manifest.archive_id,
            "zipedge.entries": len(manifest.entries),
            "zipedge.size": manifest.size,
        }
        with tracing.span("job", attributes, parent=tracing.extract(trace), start_time_s=queued_at):
            if queued_at is not None:
                tracing.end(tracing.start("queued", start_time_s=queued_at), end_time_s=started)
            await self._build(manifest, report, job_id, gate)

    async def _build(self, manifest: Manifest, report: Report, job_id: str, gate: CommitGate | None) -> None:
        cache = self._runtime.cache
        if cache is None:
            raise BuildFailed("no cache is configured (ZIPEDGE_CACHE): jobs need one", retryable=False)
        progress = Progress(bytes_total=manifest.size, entries_total=len(manifest.entries))
        while True:
            if await self.is_cached(manifest):
                # Built by a stream, another job or an earlier attempt: ready, unless
                # cancelled first.
                if await self._claim(gate, job_id) is Gate.COMMITTING and gate is not None:
                    await gate.committed(job_id)
                progress.bytes_done, progress.entries_done = progress.bytes_total, progress.entries_total
                await report(progress)
                return
            lease = await self._runtime.lock.try_acquire(manifest.objects_id)
            if lease is not None:
                break
            # A stream (or another worker) is building it: wait for its result, or its lock.
            await report(progress)
            await asyncio.sleep(JOB_LOCK_POLL_S)
        try:
            await self._write(cache, manifest, lease, progress, report, job_id, gate)
        except (StreamAborted, CacheWriteFailed, DependencyUnavailable) as exc:
            raise BuildFailed(exc.message, retryable=_retryable(exc)) from exc
        finally:
            await asyncio.shield(lease.release())

    async def _write(
        self,
        cache: ArchiveCache,
        manifest: Manifest,
        lease: Lease,
        progress: Progress,
        report: Report,
        job_id: str,
        gate: CommitGate | None,
    ) -> None:
        writer: CacheWriter | None = await cache.writer(
            cache_entry(manifest), parts_in_flight=JOB_PARTS_IN_FLIGHT
        )
        try:
            last = time.monotonic()
            with tracing.span("build"):
                async with contextlib.aclosing(self._streams.write(manifest, progress)) as chunks:
                    async for chunk in chunks:
                        assert writer is not None
                        await writer.write(chunk)
                        if time.monotonic() - last >= JOB_PROGRESS_INTERVAL_S:
                            last = time.monotonic()
                            if lease.lost.is_set():
                                raise BuildFailed("build lock lost", retryable=True)
                            await report(progress)
            if not await lease.confirm():
                raise BuildFailed("build lock lost", retryable=True)
            # The last moment a cancel can win; from here the commit runs to its end.
            if await self._claim(gate, job_id) is Gate.COMMITTED:
                await report(progress)  # an earlier attempt committed it: ours is aborted
                return
            committing, writer = writer, None
            assert committing is not None
            try:
                with tracing.span("commit"):
                    await settle(committing.commit())
            except BaseException:
                if gate is not None:
                    await settle(gate.reopen(job_id))
                raise
            if gate is not None:
                await settle(gate.committed(job_id))
            await report(progress)
        finally:
            if writer is not None:
                await writer.abort()

    @staticmethod
    async def _claim(gate: CommitGate | None, job_id: str) -> Gate:
        """COMMITTING (this build commits) or COMMITTED (done already); JobCancelled."""
        held = Gate.COMMITTING if gate is None else await gate.claim_commit(job_id)
        if held is Gate.CANCELLED:
            raise JobCancelled(f"job {job_id} was cancelled before its archive was committed")
        return held
