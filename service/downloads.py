"""The use case: a selection becomes an answer.

`resolve_range` / `resolve_posted` turn a selection into a manifest (`resolver.py`);
`respond` decides, in this order, what the client gets for it:

1. `NotModified` when it already holds these bytes (`If-None-Match`);
2. the cached archive when one is built for these objects: `Redirect` to a stable
   presigned URL, or `CachedFile` when this process serves its cache itself (the embedded
   default's folder), at the same URL;
3. a `Stream` of status `206` for a single `Range` (never teed, never a job): the bytes of
   the layout the client's download started with (`If-Range`, or the one last served);
4. `Deferred` when the selection is over the streaming limits: a background job
   (submitted for GET; HEAD only says so and starts nothing);
5. `Stream`: the whole archive with an exact size, teed into the cache by whichever stream
   wins the build lock (`streams.py`).

No Starlette here: `service/web/` parses the request, calls this, and translates the
outcome into a response.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

from service import tracing
from service.archive.manifest import Manifest, is_archive_id
from service.archive.names import content_disposition
from service.archive.ranges import ByteRange, if_range_holds, parse_range
from service.archive.selection import DateRange
from service.archive.served import ServedLayout
from service.cache.base import CachedArchive
from service.constants import CACHE_DENIED_LOG_INTERVAL_S, LAYOUTS_KEPT_ENTRIES, URL_SOURCE_ID
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
class CachedFile:
    """A finished archive this process serves itself, with Range and If-Range."""

    path: Path
    headers: dict[str, str]


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
    status: int = 200


Outcome = NotModified | Redirect | CachedFile | Deferred | Stream


def etag_of(archive_id: str) -> str:
    return f'"{archive_id}"'


def none_match(header: str, etags: Sequence[str]) -> str | None:
    """The first of `etags` (the one the answer carries first) an `If-None-Match` names;
    `*` names any. The comparison is weak (RFC 9110 §13.1.2): `W/"id"` names `"id"`, as a
    proxy that weakened it meant."""
    wanted = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return next((etag for etag in etags if "*" in wanted or etag in wanted), None)


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
            source_id=runtime.source_id,
            limits=Limits(settings.max_entries, settings.max_bytes),
            http_allow=settings.http_allow,
        )
        self._denied_logged_at = 0.0
        #: layouts loaded for ranged answers, most recent last (bounded by their entries)
        self._layouts: OrderedDict[str, Manifest] = OrderedDict()

    # --- selections ----------------------------------------------------------------------

    async def resolve_range(self, selection: DateRange) -> Manifest:
        with tracing.span("resolve", {"zipedge.selection": f"{selection.start}..{selection.end}"}):
            manifest = await self._resolver.date_range(selection)
            tracing.set_attributes({"zipedge.entries": len(manifest.entries), "zipedge.size": manifest.size})
            return manifest

    async def resolve_posted(self, body: Any, caller: Caller = UNAUTHENTICATED) -> Manifest:
        """A `POST /v1/archives` body; the manifest is stored so its URL works anywhere,
        as the caller's (counted against its client's quota of stored archives)."""
        with tracing.span("resolve", {"zipedge.selection": "posted"}):
            manifest = await self._resolver.posted(body)
            tracing.set_attributes({"zipedge.entries": len(manifest.entries), "zipedge.size": manifest.size})
        await self._runtime.manifests.put(manifest, owner=caller)
        return manifest

    async def stored(self, archive_id: str, caller: Caller = UNAUTHENTICATED) -> Manifest:
        """A posted archive, if the caller posted it (admin: any); `UnknownArchive`
        otherwise, also when the id is right: ids are content hashes anyone can compute.
        With the CRCs the index has learned since it was posted (a new layout of the same
        objects: its own ETag)."""
        manifests = self._runtime.manifests
        if not caller.admin and not await manifests.owned_by(archive_id, caller.sub):
            raise UnknownArchive(f"no archive {archive_id!r}")
        manifest = await manifests.get(archive_id)
        known = await self._known_crcs(manifest)
        if all(crc == entry.crc32 for crc, entry in zip(known, manifest.entries, strict=True)):
            return manifest
        entries = tuple(
            replace(entry, crc32=crc) if crc is not None else entry
            for entry, crc in zip(manifest.entries, known, strict=True)
        )
        return Manifest(entries=entries, source=manifest.source, filename=manifest.filename)

    # --- answers -------------------------------------------------------------------------

    async def respond(
        self,
        manifest: Manifest,
        *,
        selection: str,
        method: str,
        headers: Mapping[str, str],
        base_url: str,
        caller: Caller = UNAUTHENTICATED,
    ) -> Outcome:
        """`selection` is a stable key of what was asked for (`range:<from>:<to>`,
        `archive:<id>`): ranged requests of one download are tied to it."""
        cached, tee = await self._cached(manifest)
        etag = etag_of(cached.archive_id if cached else manifest.archive_id)
        unmodified = headers.get("if-none-match")
        if unmodified is not None and (
            found := await self._unmodified(unmodified, manifest, selection, etag)
        ):
            return NotModified(found)
        if cached:
            return await self._from_cache(manifest, cached, method=method, base_url=base_url)

        requested = headers.get("range")
        if requested is not None and method in ("GET", "HEAD"):
            layout = await self._layout_for(manifest, selection, caller, headers.get("if-range"))
            if layout is not None:
                window = parse_range(requested, layout.size)  # RangeNotSatisfiable: a 416
                if window is not None:
                    # A download may begin with a range: its resumes belong to this layout.
                    await self._remember_served(selection, caller, layout, everyone=False)
                    return await self._partial(layout, window)

        settings = self._settings
        if manifest.size > settings.stream_max_bytes or len(manifest.entries) > settings.stream_max_entries:
            if method == "HEAD":
                return Deferred(job_id_for(manifest.objects_id, caller.sub), None)
            job = await self._jobs.submit(manifest, caller)
            return Deferred(job.id, job)
        await self._remember_served(selection, caller, manifest)
        return Stream(manifest, self._headers(manifest), lambda: self._streams.stream(manifest, tee=tee))

    async def cached_url(
        self, objects_id: str, filename: str, *, base_url: str, method: str = "GET"
    ) -> str | None:
        """Where the cached archive is downloaded (None without a cache)."""
        cache = self._runtime.cache
        if cache is None:
            return None
        base = self._settings.public_url or base_url
        return await cache.url(objects_id, filename, base_url=base, method=method)

    # --- the cache -----------------------------------------------------------------------

    async def _cached(self, manifest: Manifest) -> tuple[CachedArchive | None, bool]:
        """(the cached archive of these objects, may a stream tee into the cache). A cache
        that cannot be asked is a miss (the source may still be fine to stream from); one
        that refuses access is a configuration error: stream without teeing, or every
        request would rebuild."""
        cache = self._runtime.cache
        if cache is None:
            return None, False
        try:
            with tracing.span("cache lookup", {"zipedge.objects_id": manifest.objects_id}):
                found = await cache.lookup(manifest.objects_id)
                tracing.set_attributes({"zipedge.cache.hit": found is not None})
        except CacheMisconfigured as exc:
            CACHE_MISCONFIGURED.inc()
            now = time.monotonic()
            if now - self._denied_logged_at >= CACHE_DENIED_LOG_INTERVAL_S:
                self._denied_logged_at = now
                logger.error("CACHE MISCONFIGURED, streaming without caching: %s", exc.message)
            return None, False
        except DependencyUnavailable as exc:
            logger.warning("cache lookup failed, streaming instead: %s", exc.message)
            return None, True
        CACHE_LOOKUPS.labels("hit" if found else "miss").inc()
        return found, True

    async def _from_cache(
        self, manifest: Manifest, cached: CachedArchive, *, method: str, base_url: str
    ) -> Outcome:
        cache = self._runtime.cache
        assert cache is not None
        served = await cache.served_file(cached.objects_id)
        if served is not None:
            path, _ = served
            return CachedFile(
                path,
                {
                    "ETag": etag_of(cached.archive_id),
                    "Content-Disposition": content_disposition(manifest.filename),
                    "Last-Modified": formatdate(manifest.last_modified, usegmt=True),
                    # The selection behind the URL can change (new photos): not cacheable.
                    "Cache-Control": "no-store",
                    "X-Archive-Cache": "hit",
                },
            )
        location = await self.cached_url(
            manifest.objects_id, manifest.filename, base_url=base_url, method=method
        )
        assert location is not None
        return Redirect(location, etag_of(cached.archive_id))

    # --- layouts and ranges --------------------------------------------------------------

    async def _unmodified(self, header: str, manifest: Manifest, selection: str, etag: str) -> str | None:
        """The ETag of `If-None-Match` that still names these objects' bytes: the current
        layout, the cached one, or the one this selection was served as (the same
        objects, laid out before more CRCs were known)."""
        found = none_match(header, (etag, etag_of(manifest.archive_id)))
        if found is not None:
            return found
        try:
            record = await self._runtime.manifests.served(selection)
        except DependencyUnavailable:
            return None
        served_id = record.archive_id if record else None
        if served_id is None or none_match(header, (etag_of(served_id),)) is None:
            return None
        layout = await self._load(served_id)
        return etag_of(served_id) if layout is not None and layout.objects_id == manifest.objects_id else None

    async def _remember_served(
        self, selection: str, caller: Caller, manifest: Manifest, *, everyone: bool = True
    ) -> None:
        """Remember `manifest` as what this client was served, and (`everyone`: a whole
        archive, the current layout) as what the selection was; a part cut from a client's
        older layout must not make the selection look as if it switched back."""
        mine = _for_client(selection, caller)
        try:
            if everyone:
                await self._runtime.manifests.serve(mine, manifest, selection)
            else:
                await self._runtime.manifests.serve(mine, manifest)
        except DependencyUnavailable as exc:
            # The stream is fine; only a later resume may get the whole archive again.
            logger.warning("could not remember the layout served: %s", exc.message)

    async def _served(
        self, selection: str, caller: Caller
    ) -> tuple[ServedLayout | None, ServedLayout | None]:
        """(what this client was last served for the selection, what anyone was)."""
        manifests = self._runtime.manifests
        try:
            return await manifests.served(_for_client(selection, caller)), await manifests.served(selection)
        except DependencyUnavailable as exc:
            logger.warning("cannot tell which layout was served: %s", exc.message)
            return None, None

    async def _load(self, archive_id: str) -> Manifest | None:
        kept = self._layouts.get(archive_id)
        if kept is not None:
            self._layouts.move_to_end(archive_id)
            return kept
        try:
            loaded = await self._runtime.manifests.get(archive_id)
        except (UnknownArchive, DependencyUnavailable):
            return None
        self._layouts[archive_id] = loaded
        while (
            sum(len(m.entries) for m in self._layouts.values()) > LAYOUTS_KEPT_ENTRIES
            and len(self._layouts) > 1
        ):
            self._layouts.popitem(last=False)
        return loaded

    async def _layout_for(
        self, manifest: Manifest, selection: str, caller: Caller, if_range: str | None
    ) -> Manifest | None:
        """The layout a ranged request belongs to.

        Without `If-Range` (curl -C -, aria2c, wget -c): the one this client was last
        served for this selection, so every part of its download is cut from the same
        bytes; if one of its objects changed since, reading it fails and the connection is
        cut (never a part of another archive). A client the service has no record of (its
        address changed) gets the one anyone was last served, unless the selection
        switched layouts lately: then it may hold either, and gets None (the whole current
        archive, which such a client refuses to append: curl says it cannot resume),
        never bytes of the other one. The same for an `If-Range` date, which the layouts
        share. With an `If-Range` ETag: the layout it names if that is still these very
        objects, else None."""
        mine, anyone = await self._served(selection, caller)
        by_date = if_range is None or not if_range.strip().startswith(('"', "W/"))
        if by_date and mine is None and anyone is not None and not anyone.alone(time.time()):
            return None  # either layout, and both carry the same Last-Modified
        record = mine or anyone
        served_id = record.archive_id if record else None
        served = None
        if served_id == manifest.archive_id:
            served = manifest
        elif served_id is not None:
            served = await self._load(served_id)
        if if_range is None:
            return served or manifest
        for layout in (served, manifest):
            if layout is None or layout.objects_id != manifest.objects_id:
                continue
            date = formatdate(layout.last_modified, usegmt=True)
            if if_range_holds(if_range, etag=etag_of(layout.archive_id), last_modified=date):
                return layout
        named = if_range.strip().strip('"')
        if is_archive_id(named):
            layout = await self._load(named)
            if layout is not None and layout.objects_id == manifest.objects_id:
                return layout
        return None

    async def _partial(self, layout: Manifest, window: ByteRange) -> Stream:
        known = await self._known_crcs(layout)
        headers = self._headers(layout)
        headers["Content-Length"] = str(len(window))
        headers["Content-Range"] = window.content_range
        return Stream(layout, headers, lambda: self._streams.slice(layout, window, known), status=206)

    async def _known_crcs(self, layout: Manifest) -> list[int | None]:
        """Each member's CRC-32: the layout's own, or what the index learned since."""
        known: list[int | None] = [entry.crc32 for entry in layout.entries]
        for kind, source_id in (("key", self._runtime.source_id), ("url", URL_SOURCE_ID)):
            missing = [i for i, e in enumerate(layout.entries) if e.crc32 is None and e.kind == kind]
            if missing:
                pairs = [(layout.entries[i].ref, layout.entries[i].etag) for i in missing]
                for i, crc in zip(missing, await self._runtime.index.lookup(source_id, pairs), strict=True):
                    known[i] = crc
        return known

    def _headers(self, manifest: Manifest) -> dict[str, str]:
        return {
            "Content-Type": "application/zip",
            "Content-Length": str(manifest.size),
            "Content-Disposition": content_disposition(manifest.filename),
            "ETag": etag_of(manifest.archive_id),
            "Last-Modified": formatdate(manifest.last_modified, usegmt=True),
            # Any single range, live: the bytes a full GET of this ETag has there.
            "Accept-Ranges": "bytes",
            "Cache-Control": "no-store",
            # Tell nginx not to spool the stream to disk or memory (backpressure stays intact).
            "X-Accel-Buffering": "no",
            "X-Archive-Entries": str(len(manifest.entries)),
            "X-Archive-Cache": "miss",
        }


def _for_client(selection: str, caller: Caller) -> str:
    """The key of what one client (subject and address) was served for `selection`: a
    download and its resumes come from one client, other people's from others."""
    return f"{selection}\nclient:{caller.sub}@{caller.address}"
