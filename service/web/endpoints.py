"""Thin handlers: parse the request, ask `Downloads`, translate its answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from service import __version__
from service.archive.manifest import Manifest, is_archive_id
from service.archive.names import content_disposition
from service.archive.selection import parse_date_range
from service.constants import IMMUTABLE_CACHE_CONTROL, READINESS_DEADLINE_S, RETRY_AFTER_UNAVAILABLE_S
from service.downloads import CachedFile, Deferred, NotModified, Outcome, Redirect, Stream, none_match
from service.exceptions import InvalidParameter, UnknownArchive
from service.metrics import JOBS_QUEUED, render
from service.quotas import Slot
from service.readiness import probe_all
from service.web.auth import link_signer, sign_local
from service.web.bodies import read_json, unless_disconnected
from service.web.context import caller_of, services
from service.web.jobs import job_accepted
from service.web.responses import ArchiveResponse


class _Holding(Response):
    """A response that gives its client's live-stream slot back when it has ended,
    however it ended (complete, cut, or the client gone before the first byte)."""

    def __init__(self, response: Response, slot: Slot) -> None:
        self._response, self._slot = response, slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._response(scope, receive, send)
        finally:
            await asyncio.shield(self._slot.release())


async def answer(request: Request, manifest: Manifest, *, selection: str) -> Response:
    caller = caller_of(request)
    outcome: Outcome = await services(request).downloads.respond(
        manifest,
        selection=selection,
        method=request.method,
        headers=request.headers,
        base_url=str(request.base_url),
        caller=caller,
    )
    if isinstance(outcome, NotModified):
        return Response(status_code=304, headers={"ETag": outcome.etag})
    if isinstance(outcome, Redirect):
        # The selection behind /v1/zip can change (new photos): the redirect is not cached.
        return RedirectResponse(
            sign_local(request, outcome.location),
            status_code=302,
            headers={"ETag": outcome.etag, "Cache-Control": "no-store"},
        )
    if isinstance(outcome, CachedFile):
        return _cached_file(outcome.path, outcome.headers)
    if isinstance(outcome, Deferred):
        return await job_accepted(request, outcome)
    assert isinstance(outcome, Stream)
    response = ArchiveResponse(outcome.body, headers=outcome.headers, status_code=outcome.status)
    if request.method == "HEAD":
        return response
    slot = await services(request).quotas.stream_slot(caller.client_id)
    return _Holding(response, slot)


def _cached_file(path: Path, headers: dict[str, str]) -> Response:
    """A cache file, with Range and If-Range (Starlette's FileResponse), under our ETag."""
    return FileResponse(path, media_type="application/zip", headers=headers)


async def zip_range(request: Request) -> Response:
    downloads = services(request).downloads
    selection = parse_date_range(
        request.query_params.get("from"),
        request.query_params.get("to"),
        max_days=services(request).runtime.settings.max_range_days,
    )
    manifest = await downloads.resolve_range(selection)
    return await answer(request, manifest, selection=f"range:{selection.start}:{selection.end}")


async def create_archive(request: Request) -> Response:
    body = await read_json(request)
    # Resolving 100,000 entries takes a while: if the client leaves, all of it stops.
    manifest = await unless_disconnected(
        request, services(request).downloads.resolve_posted(body, caller_of(request))
    )
    if manifest is None:
        return Response(status_code=499)  # nobody is listening; for the access log
    url = str(request.url_for("archive", archive_id=manifest.archive_id))
    return JSONResponse(
        {
            "id": manifest.archive_id,
            "url": url,
            "size": manifest.size,
            "entries": len(manifest.entries),
            "filename": manifest.filename,
            "renamed": manifest.renamed,
        },
        status_code=201,
        headers={"Location": url},
    )


async def get_archive(request: Request) -> Response:
    archive_id = request.path_params["archive_id"]
    if not is_archive_id(archive_id):
        raise UnknownArchive(f"no archive {archive_id!r}")
    manifest = await services(request).downloads.stored(archive_id, caller_of(request))
    return await answer(request, manifest, selection=f"archive:{archive_id}")


async def cached_archive(request: Request) -> Response:
    """A finished archive from a cache this process serves itself (the embedded default's
    folder), with Range (resumable), immutable, under the name the redirect asked for."""
    objects_id = request.path_params["archive_id"]
    cache = services(request).runtime.cache
    served = await cache.served_file(objects_id) if cache is not None and is_archive_id(objects_id) else None
    if served is None:
        raise UnknownArchive(f"no cached archive {objects_id!r}")
    path, cached = served
    filename = request.query_params.get("filename") or f"{objects_id}.zip"
    headers = {
        "ETag": f'"{cached.archive_id}"',
        "Cache-Control": IMMUTABLE_CACHE_CONTROL,
        "Content-Disposition": content_disposition(filename),
    }
    # The same matching as /v1/zip: a client that had either answer revalidates either way.
    unmodified = request.headers.get("if-none-match")
    if unmodified is not None and none_match(unmodified, (headers["ETag"],)) is not None:
        return Response(status_code=304, headers={"ETag": headers["ETag"]})
    return _cached_file(path, headers)


async def metrics(request: Request) -> Response:
    JOBS_QUEUED.set(await services(request).jobs.depth())
    return Response(render(services(request).runtime.settings), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    """200 when every dependency answers in time; 503 naming those that do not."""
    checks = await probe_all(services(request).runtime.probes(), deadline_s=READINESS_DEADLINE_S)
    failed = {name: message for name, message in checks.items() if message != "ok"}
    status = 503 if failed else 200
    headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)} if failed else None
    return JSONResponse(
        {"status": "degraded" if failed else "ok", "checks": checks}, status_code=status, headers=headers
    )


async def create_link(request: Request) -> Response:
    """A download link a browser opens with no header: `{"from", "to"}` or `{"archive": id}`
    (the caller's own). Signed for the caller when authentication is on; without it, the
    plain URL, which never expires (`expires_at` null)."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidParameter("the body must be a JSON object")
    caller = caller_of(request)
    params: list[tuple[str, str]] = []
    if "archive" in body:
        archive_id = body["archive"]
        if not isinstance(archive_id, str) or not is_archive_id(archive_id):
            raise InvalidParameter("'archive' must be an archive id")
        await services(request).downloads.stored(archive_id, caller)  # 404 unless the caller's
        path = str(request.app.url_path_for("archive", archive_id=archive_id))
    else:
        selection = parse_date_range(
            body.get("from"), body.get("to"), max_days=services(request).runtime.settings.max_range_days
        )
        path = str(request.app.url_path_for("range"))
        params = [("from", selection.start.isoformat()), ("to", selection.end.isoformat())]
    base = str(request.base_url).rstrip("/") + path
    signer = link_signer(services(request).runtime.settings.auth)
    if signer is None:
        return JSONResponse(
            {"url": f"{base}?{urlencode(params)}" if params else base, "expires_at": None}, 201
        )
    link = signer.sign(path, params, caller.sub)
    expires_at = datetime.fromtimestamp(link.expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return JSONResponse({"url": f"{base}?{link.query}", "expires_at": expires_at}, status_code=201)
