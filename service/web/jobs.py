"""The job API: submit, read, follow (Server-Sent Events), cancel, list.

A job is its owner's: another caller gets 404 for it, as for an id that does not exist,
and never sees it listed; `admin` sees all."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from service.archive.manifest import is_archive_id
from service.archive.selection import parse_date_range
from service.constants import (
    JOB_PROGRESS_INTERVAL_S,
    RECENT_JOBS_LISTED,
    SSE_PING_S,
    SSE_POLL_S,
    SSE_RETRY_MS,
)
from service.downloads import Deferred
from service.exceptions import InvalidParameter, UnknownJob
from service.jobs.model import JobStatus, JobView
from service.jobs.queue import JobQueue
from service.web.auth import sign_local
from service.web.bodies import read_json
from service.web.context import caller_of, services


def _jobs(request: Request) -> JobQueue:
    return services(request).jobs


async def job_json(request: Request, view: JobView) -> dict[str, Any]:
    doc = view.to_json()
    doc["status_url"] = str(request.url_for("job", job_id=view.id))
    doc["events_url"] = str(request.url_for("job_events", job_id=view.id))
    if view.status is JobStatus.READY:
        url = await services(request).downloads.cached_url(
            view.objects, view.filename, base_url=str(request.base_url)
        )
        if url is not None:
            doc["download_url"] = sign_local(request, url)
    return doc


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


async def job_accepted(request: Request, deferred: Deferred) -> Response:
    """A selection over the streaming limits: 202 with the job, or 303 to its page. A HEAD
    submitted nothing: it says where the job would be."""
    status_url = str(request.url_for("job", job_id=deferred.job_id))
    if wants_html(request):
        return RedirectResponse(f"/?job={deferred.job_id}", status_code=303)
    if deferred.job is None:
        return Response(status_code=202, headers={"Location": status_url})
    doc = await job_json(request, deferred.job)
    return JSONResponse(doc, status_code=202, headers={"Location": status_url})


async def create_job(request: Request) -> Response:
    downloads = services(request).downloads
    caller = caller_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidParameter("the body must be a JSON object")
    if "archive" in body:
        archive_id = body["archive"]
        if not isinstance(archive_id, str) or not is_archive_id(archive_id):
            raise InvalidParameter("'archive' must be an archive id")
        manifest = await downloads.stored(archive_id, caller)
    else:
        selection = parse_date_range(
            body.get("from"), body.get("to"), max_days=services(request).runtime.settings.max_range_days
        )
        manifest = await downloads.resolve_range(selection)
    view = await _jobs(request).submit(manifest, caller)
    doc = await job_json(request, view)
    return JSONResponse(doc, status_code=202, headers={"Location": doc["status_url"]})


def _job_id(request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not is_archive_id(job_id):
        raise UnknownJob(f"no job {job_id!r}")
    return job_id


async def _own_job(request: Request) -> JobView:
    """The job named in the path, if it is the caller's to see; `UnknownJob` otherwise."""
    job_id = _job_id(request)
    view = await _jobs(request).get(job_id)
    if not caller_of(request).owns(view.owner):
        raise UnknownJob(f"no job {job_id!r}")
    return view


async def get_job(request: Request) -> Response:
    return JSONResponse(await job_json(request, await _own_job(request)))


async def cancel_job(request: Request) -> Response:
    view = await _own_job(request)
    return JSONResponse(await job_json(request, await _jobs(request).cancel(view.id)))


async def list_jobs(request: Request) -> Response:
    views = await _jobs(request).recent(RECENT_JOBS_LISTED, caller_of(request))
    return JSONResponse({"jobs": [await job_json(request, v) for v in views]})


def _event_id(view: JobView) -> str:
    # Grows with every change, so a reconnect (Last-Event-ID) skips what it has seen.
    return f"{int(view.updated_at * 1000)}.{view.entries_done}.{view.status.value}"


async def job_events(request: Request) -> Response:
    """Progress at most once a second, then one final ready/failed/cancelled event."""
    jobs = _jobs(request)
    job_id = (await _own_job(request)).id  # 404 before the stream starts
    seen = request.headers.get("last-event-id", "")

    async def events() -> AsyncIterator[dict[str, Any]]:
        nonlocal seen
        last_sent = 0.0
        while True:
            view = await jobs.get(job_id)
            event_id = _event_id(view)
            due = time.monotonic() - last_sent >= JOB_PROGRESS_INTERVAL_S
            if view.status.terminal or (event_id != seen and due):
                yield {
                    "event": view.status.value if view.status.terminal else "progress",
                    "id": event_id,
                    "data": json.dumps(await job_json(request, view)),
                    "retry": SSE_RETRY_MS,
                }
                seen, last_sent = event_id, time.monotonic()
            if view.status.terminal:
                return
            await asyncio.sleep(SSE_POLL_S)

    return EventSourceResponse(events(), ping=SSE_PING_S)
