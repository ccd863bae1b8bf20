"""An archive's bytes, end to end: objects → prefetcher → writer → (tee) → the caller.

The pipeline reads in one direction. `Objects.open` yields each entry's bytes, the
`Prefetcher` (inside `write_archive`) fetches ahead within a byte budget and hands them
over in order, the writer frames them, and when this stream wins the build lock the `Tee`
copies every chunk into a cache object. Every stage closes the one before it (`aclosing`,
the prefetcher's own shielded close), so a client that leaves or a source that fails
stops everything upstream at once and nothing is left running unawaited.

Every member read whole teaches the object index its CRC-32 (`_Lessons`): recorded when
the stream ends, however it ends, and its days' listings bumped so the next archive of
them carries those CRCs in its local headers.

One exception, on purpose: a teed stream runs in a `Build` task owned here, so that when
its client leaves it can finish the cache object for the next request
(`ZIPEDGE_TEE_ON_DISCONNECT=finish`), up to `ZIPEDGE_MAX_BUILDS` at a time per process;
beyond that, or with `abort`, the build stops with its client. `aclose` stops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from opentelemetry.trace import Span

from service import tracing
from service.archive.manifest import Manifest
from service.archive.ranges import ByteRange
from service.cache.base import CacheEntry, settle
from service.cache.tee import Build, Tee
from service.constants import TEE_MAX_LAG_BYTES, URL_SOURCE_ID
from service.exceptions import CacheWriteFailed, DependencyUnavailable
from service.index import Known
from service.listing import learn
from service.objects import Objects
from service.runtime import Runtime
from service.slices import write_slice
from service.writer import Progress, write_archive

logger = logging.getLogger(__name__)


def cache_entry(manifest: Manifest) -> CacheEntry:
    return CacheEntry(
        objects_id=manifest.objects_id,
        archive_id=manifest.archive_id,
        size=manifest.size,
        filename=manifest.filename,
        last_modified=manifest.last_modified,
    )


class Streams:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._objects = Objects(runtime.source, runtime.origin, runtime.listings)
        #: builds whose cache write is not settled yet (attached or not)
        self._builds: set[Build] = set()
        self.active = 0

    @property
    def building(self) -> int:
        """Builds whose cache write is not settled yet (with or without their client)."""
        return len(self._builds)

    @property
    def background_builds(self) -> int:
        """Builds still running for the cache alone (their client left)."""
        return sum(1 for build in self._builds if not build.attached)

    async def write(
        self, manifest: Manifest, progress: Progress | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The archive's bytes, untee'd: `StreamAborted` if an object cannot be read."""
        lessons = _Lessons(self._runtime, manifest)
        progress = progress or Progress()
        span = _stream_span(manifest, "archive")
        failed: BaseException | None = None
        try:
            writing = write_archive(
                manifest,
                self._objects.open,
                concurrency=self._settings.fetch_concurrency,
                budget=self._settings.prefetch_bytes,
                progress=progress,
                learned=lessons.learned,
                trace=tracing.child_context(span),
            )
            async with contextlib.aclosing(writing) as chunks:
                async for chunk in chunks:
                    yield chunk
        except BaseException as exc:
            failed = exc
            raise
        finally:
            _end_stream_span(span, progress.bytes_done, progress.entries_done, failed)
            await settle(lessons.record())

    async def slice(
        self, manifest: Manifest, window: ByteRange, known: Sequence[int | None]
    ) -> AsyncGenerator[bytes, None]:
        """Exactly the bytes of `window`, never teed (a part of an archive is no archive)."""
        self.active += 1
        lessons = _Lessons(self._runtime, manifest)
        span = _stream_span(manifest, "range", {"zipedge.range": f"{window.start}-{window.stop - 1}"})
        sent = 0
        failed: BaseException | None = None
        try:
            slicing = write_slice(
                manifest,
                window,
                self._objects.open,
                known=known,
                concurrency=self._settings.fetch_concurrency,
                budget=self._settings.prefetch_bytes,
                learned=lessons.learned,
                trace=tracing.child_context(span),
            )
            async with contextlib.aclosing(slicing) as chunks:
                async for chunk in chunks:
                    sent += len(chunk)
                    yield chunk
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self.active -= 1
            _end_stream_span(span, sent, None, failed)
            await settle(lessons.record())

    async def stream(self, manifest: Manifest, *, tee: bool = True) -> AsyncIterator[bytes]:
        """The archive's bytes for one client, teed into the cache when `tee` and this
        stream wins the build lock. Raises `StreamAborted` if an object cannot be read."""
        self.active += 1
        try:
            opened = await self._open_tee(manifest) if tee else None
            if opened is None:
                async with contextlib.aclosing(self.write(manifest)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            build = Build(self.write(manifest), opened)
            self._builds.add(build)
            build.tee.task.add_done_callback(lambda _: self._builds.discard(build))
            try:
                async for chunk in build.client_chunks():
                    yield chunk
            finally:
                finish = self._settings.finish_on_disconnect
                if finish and self.background_builds >= self._settings.max_builds:
                    logger.info(
                        "%d builds already finishing for the cache: not this one", self.background_builds
                    )
                    finish = False
                build.detach(finish=finish)
        finally:
            self.active -= 1

    async def _open_tee(self, manifest: Manifest) -> Tee | None:
        cache = self._runtime.cache
        if cache is None:
            return None
        lease = await self._runtime.lock.try_acquire(manifest.objects_id)
        if lease is None:
            return None  # someone else is building it: stream without teeing
        try:
            writer = await cache.writer(cache_entry(manifest))
        except (CacheWriteFailed, DependencyUnavailable) as exc:
            logger.warning("cache write of %s not started: %s", manifest.archive_id, exc.message)
            await lease.release()
            return None
        except BaseException:
            # The client left (or the server stops) while the upload was being created:
            # let go of the lock now, or its renewal would keep it until the process exits.
            await asyncio.shield(lease.release())
            raise
        return Tee(writer, lease, max_lag=TEE_MAX_LAG_BYTES, archive_id=manifest.objects_id)

    async def aclose(self) -> None:
        """Stop every build; their uploads are aborted, nothing partial remains."""
        builds = list(self._builds)
        for build in builds:
            build.detach(finish=False)
            build.tee.drop("shutting down")
        await asyncio.gather(*(b.wait() for b in builds), return_exceptions=True)


def _stream_span(manifest: Manifest, kind: str, extra: tracing.Attributes | None = None) -> Span | None:
    """The "stream" span of one write (None when tracing is off): not made current, since
    the write is an async generator; its fetches are its children."""
    return tracing.start(
        "stream",
        {
            "zipedge.kind": kind,
            "zipedge.archive_id": manifest.archive_id,
            "zipedge.entries": len(manifest.entries),
            "zipedge.size": manifest.size,
            **(extra or {}),
        },
    )


def _end_stream_span(span: Span | None, sent: int, entries: int | None, failed: BaseException | None) -> None:
    if span is None:
        return
    if failed is None:
        outcome = "complete"
    elif isinstance(failed, GeneratorExit | asyncio.CancelledError):
        outcome, failed = "stopped", None  # the client left, or the build was stopped
    else:
        outcome = "aborted"
    attributes: dict[str, str | int] = {"zipedge.bytes": sent, "zipedge.outcome": outcome}
    if entries is not None:
        attributes["zipedge.entries_done"] = entries
    tracing.end(span, attributes, error=failed)


class _Lessons:
    """The CRCs one write learned, recorded in the object index once it ends."""

    def __init__(self, runtime: Runtime, manifest: Manifest) -> None:
        self._runtime = runtime
        self._manifest = manifest
        self._found: list[tuple[int, int]] = []

    def learned(self, index: int, crc: int) -> None:
        self._found.append((index, crc))

    async def record(self) -> None:
        if not self._found:
            return
        entries = self._manifest.entries
        keys = [
            Known(entries[i].ref, entries[i].etag, crc) for i, crc in self._found if entries[i].kind == "key"
        ]
        urls = [
            Known(entries[i].ref, entries[i].etag, crc) for i, crc in self._found if entries[i].kind == "url"
        ]
        self._found = []
        await self._runtime.index.record(URL_SOURCE_ID, [fact for fact in urls if fact.validator])
        await learn(self._runtime.listings, self._runtime.source_id, keys)
