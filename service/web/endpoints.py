"""Thin handlers: parse the request, ask the domain, choose the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import formatdate

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from service import __version__
from service.archive.manifest import Manifest, is_archive_id
from service.archive.names import content_disposition
from service.archive.selection import parse_date_range
from service.cache.store import FolderArchiveCache
from service.exceptions import UnknownArchive
from service.jobs.queue import JobQueue
from service.metrics import JOBS_QUEUED, render
from service.runtime import Runtime
from service.web.bodies import read_json
from service.web.jobs import job_response
from service.web.responses import ArchiveResponse


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _etag(manifest: Manifest) -> str:
    return f'"{manifest.archive_id}"'


async def archive_response(request: Request, manifest: Manifest, *, filename: str) -> Response:
    """A redirect to the cached archive; else a job if the selection is over the streaming
    limits; else the 200 stream (or 304 when the client already has these exact bytes)."""
    runtime = _runtime(request)
    etag = _etag(manifest)
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers={"ETag": etag})
    if runtime.cache is not None and await runtime.cached(manifest) is not None:
        base = runtime.settings.public_url or str(request.base_url)
        location = runtime.cache.url(manifest.archive_id, filename, base_url=base, method=request.method)
        # The selection behind /v1/zip can change (new photos); the redirect is not cached.
        return RedirectResponse(
            location, status_code=302, headers={"ETag": etag, "Cache-Control": "no-store"}
        )
    settings = runtime.settings
    if manifest.size > settings.stream_max_bytes or len(manifest.entries) > settings.stream_max_entries:
        return await job_response(request, manifest)
    headers = {
        "Content-Type": "application/zip",
        "Content-Length": str(manifest.size),
        "Content-Disposition": content_disposition(filename),
        "ETag": etag,
        "Last-Modified": formatdate(manifest.last_modified, usegmt=True),
        # A live stream cannot honour Range; resumable downloads come from the cache.
        "Accept-Ranges": "none",
        "Cache-Control": "no-store",
        # Tell nginx not to spool the stream to disk or memory (backpressure stays intact).
        "X-Accel-Buffering": "no",
        "X-Archive-Entries": str(len(manifest.entries)),
    }

    def body() -> AsyncIterator[bytes]:
        return runtime.stream(manifest)

    return ArchiveResponse(body, headers=headers)


async def zip_range(request: Request) -> Response:
    runtime = _runtime(request)
    selection = parse_date_range(
        request.query_params.get("from"),
        request.query_params.get("to"),
        max_days=runtime.settings.max_range_days,
    )
    manifest = await runtime.resolver.date_range(selection)
    return await archive_response(request, manifest, filename=manifest.filename)


async def create_archive(request: Request) -> Response:
    runtime = _runtime(request)
    manifest = await runtime.resolver.posted(await read_json(request))
    await runtime.manifests.put(manifest)
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
    runtime = _runtime(request)
    archive_id = request.path_params["archive_id"]
    if not is_archive_id(archive_id):
        raise UnknownArchive(f"no archive {archive_id!r}")
    manifest = await runtime.manifests.get(archive_id)
    return await archive_response(request, manifest, filename=manifest.filename)


async def cached_archive(request: Request) -> Response:
    """The embedded default's cache: finished archives from the cache folder, with Range
    (resumable), immutable, under the name the redirect asked for."""
    runtime = _runtime(request)
    archive_id = request.path_params["archive_id"]
    if not isinstance(runtime.cache, FolderArchiveCache) or not is_archive_id(archive_id):
        raise UnknownArchive(f"no cached archive {archive_id!r}")
    if await runtime.cache.lookup(archive_id) is None:
        raise UnknownArchive(f"no cached archive {archive_id!r}")
    filename = request.query_params.get("filename") or f"{archive_id}.zip"
    response = FileResponse(
        runtime.cache.path(archive_id),
        media_type="application/zip",
        headers={"ETag": f'"{archive_id}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )
    response.headers["Content-Disposition"] = content_disposition(filename)
    return response


async def metrics(request: Request) -> Response:
    jobs: JobQueue = request.app.state.jobs
    JOBS_QUEUED.set(await jobs.depth())
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


async def readyz(request: Request) -> Response:
    """200 when every dependency answers; 503 naming those that do not."""
    checks = await _runtime(request).check()
    failed = {name: message for name, message in checks.items() if message != "ok"}
    status = 503 if failed else 200
    headers = {"Retry-After": "5"} if failed else None
    return JSONResponse(
        {"status": "degraded" if failed else "ok", "checks": checks}, status_code=status, headers=headers
    )
