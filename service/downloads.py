"""The use case: a selection becomes an answer.

`resolve_range` / `resolve_posted` turn a selection into a manifest (`resolver.py`);
`respond` decides, in this order, what the client gets for it:

1. `NotModified` when it already holds exactly these bytes (`If-None-Match`);
2. `Redirect` to the cached archive when one is built (a stable presigned URL);
3. `Deferred` when the selection is over the streaming limits: a background job
   (submitted for GET; HEAD only says so and starts nothing);
4. `Stream`: the archive's bytes with an exact size, teed into the cache by whichever
   stream wins the build lock (`streams.py`).

No Starlette here: `service/web/` parses the request, calls this, and translates the
outcome into a response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from service.archive.manifest import Manifest
from service.archive.names import content_disposition
from service.archive.selection import DateRange
from service.constants import CACHE_DENIED_LOG_INTERVAL_S
from service.exceptions import CacheMisconfigured, DependencyUnavailable, UnknownArchive
from service.identity import UNAUTHENTICATED, Caller
from service.jobs.model import JobView
from service.jobs.queue import JobQueue, job_id_for
from service.metrics import CACHE_LOOKUPS, CACHE_MISCONFIGURED
from service.resolver import Limits, Resolver
from service.runtime import Runtime
from service.streams import Streams

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NotModified:
    etag: str


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    etag: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """Over the streaming limits. `job` is None for a HEAD (nothing was submitted)."""

    job_id: str
    job: JobView | None


@dataclass(frozen=True, slots=True)
class Stream:
    manifest: Manifest
    headers: dict[str, str]
    #: A factory, so that a HEAD (which never iterates) starts no fetch.
    body: Callable[[], AsyncIterator[bytes]]


Outcome = NotModified | Redirect | Deferred | Stream


def etag_of(manifest: Manifest) -> str:
    return f'"{manifest.archive_id}"'


def _matches(header: str, etag: str) -> bool:
    return etag in {tag.strip() for tag in header.split(",")} or header.strip() == "*"


class Downloads:
    def __init__(self, runtime: Runtime, streams: Streams, jobs: JobQueue) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._settings = settings
        self._streams = streams
        self._jobs = jobs
        self._resolver = Resolver(
            runtime.source,
            runtime.listings,
            runtime.origin,
            source_id=str(settings.source),
            limits=Limits(settings.max_entries, settings.max_bytes),
            http_allow=settings.http_allow,
        )
        self._denied_logged_at = 0.0

    # --- selections ----------------------------------------------------------------------

    async def resolve_range(self, selection: DateRange) -> Manifest:
        return await self._resolver.date_range(selection)

    async def resolve_posted(self, body: Any, caller: Caller = UNAUTHENTICATED) -> Manifest:
        """A `POST /v1/archives` body; the manifest is stored so its URL works anywhere,
        as the caller's (counted against its client's quota of stored archives)."""
        manifest = await self._resolver.posted(body)
        await self._runtime.manifests.put(manifest, owner=caller)
        return manifest

    async def stored(self, archive_id: str, caller: Caller = UNAUTHENTICATED) -> Manifest:
        """A posted archive, if the caller posted it (admin: any); `UnknownArchive`
        otherwise, also when the id is right: ids are content hashes anyone can compute."""
        manifests = self._runtime.manifests
        if not caller.admin and not await manifests.owned_by(archive_id, caller.sub):
            raise UnknownArchive(f"no archive {archive_id!r}")
        return await manifests.get(archive_id)

    # --- answers -------------------------------------------------------------------------

    async def respond(
        self,
        manifest: Manifest,
        *,
        method: str,
        headers: Mapping[str, str],
        base_url: str,
        caller: Caller = UNAUTHENTICATED,
    ) -> Outcome:
        etag = etag_of(manifest)
        if _matches(headers.get("if-none-match", ""), etag):
            return NotModified(etag)
        cached, tee = await self._cached(manifest)
        if cached:
            location = await self.cached_url(
                manifest.archive_id, manifest.filename, base_url=base_url, method=method
            )
            assert location is not None
            return Redirect(location, etag)
        settings = self._settings
        if manifest.size > settings.stream_max_bytes or len(manifest.entries) > settings.stream_max_entries:
            if method == "HEAD":
                return Deferred(job_id_for(manifest.archive_id, caller.sub), None)
            job = await self._jobs.submit(manifest, caller)
            return Deferred(job.id, job)
        return Stream(
            manifest, self._stream_headers(manifest), lambda: self._streams.stream(manifest, tee=tee)
        )

    async def cached_url(
        self, archive_id: str, filename: str, *, base_url: str, method: str = "GET"
    ) -> str | None:
        """Where the cached archive is downloaded (None without a cache)."""
        cache = self._runtime.cache
        if cache is None:
            return None
        base = self._settings.public_url or base_url
        return await cache.url(archive_id, filename, base_url=base, method=method)

    async def _cached(self, manifest: Manifest) -> tuple[bool, bool]:
        """(is it cached, may a stream tee into the cache). A cache that cannot be asked
        is a miss (the source may still be fine to stream from); one that refuses access
        is a configuration error: stream without teeing, or every request would rebuild."""
        cache = self._runtime.cache
        if cache is None:
            return False, False
        try:
            found = await cache.lookup(manifest.archive_id)
        except CacheMisconfigured as exc:
            CACHE_MISCONFIGURED.inc()
            now = time.monotonic()
            if now - self._denied_logged_at >= CACHE_DENIED_LOG_INTERVAL_S:
                self._denied_logged_at = now
                logger.error("CACHE MISCONFIGURED, streaming without caching: %s", exc.message)
            return False, False
        except DependencyUnavailable as exc:
            logger.warning("cache lookup failed, streaming instead: %s", exc.message)
            return False, True
        CACHE_LOOKUPS.labels("hit" if found else "miss").inc()
        return found is not None, True

    def _stream_headers(self, manifest: Manifest) -> dict[str, str]:
        return {
            "Content-Type": "application/zip",
            "Content-Length": str(manifest.size),
            "Content-Disposition": content_disposition(manifest.filename),
            "ETag": etag_of(manifest),
            "Last-Modified": formatdate(manifest.last_modified, usegmt=True),
            # A live stream cannot honour Range; resumable downloads come from the cache.
            "Accept-Ranges": "none",
            "Cache-Control": "no-store",
            # Tell nginx not to spool the stream to disk or memory (backpressure stays intact).
            "X-Accel-Buffering": "no",
            "X-Archive-Entries": str(len(manifest.entries)),
        }
