"""`GET /v1/days?from=YYYY-MM-DD&to=YYYY-MM-DD`: which days of a range have photos, how
many and how many bytes, and the exact size of the range's archive, so a person can see
what a download holds before starting it.

The days come from the very listings an archive of the range is built from (cached for
S3, direct for a folder: `runtime.listings`), bounded like `/v1/zip` by
ZIPEDGE_MAX_RANGE_DAYS. The archive is the one `GET /v1/zip` would send, resolved by the
same resolver (its id, exact size and name); it is left out, saying why, when the range
has nothing, is over the hard limits, or has more objects than a stream may (laying out
an archive costs time for every name; such a range becomes a job, whose progress shows
its size).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.archive.selection import DateRange, parse_date_range
from service.exceptions import NothingSelected, TooLarge
from service.web.context import services


async def list_days(request: Request) -> Response:
    found = services(request)
    settings = found.runtime.settings
    selection = parse_date_range(
        request.query_params.get("from"), request.query_params.get("to"), max_days=settings.max_range_days
    )
    listings = await found.runtime.listings.list_days(selection.prefixes())
    days = [
        {"day": day.isoformat(), "objects": len(objects), "bytes": sum(o.size for o in objects)}
        for day, objects in zip(selection.days(), listings, strict=True)
    ]
    body: dict[str, Any] = {
        "from": selection.start.isoformat(),
        "to": selection.end.isoformat(),
        "days": days,
        "objects": sum(d["objects"] for d in days),
        "bytes": sum(d["bytes"] for d in days),
    }
    body.update(await _archive(request, selection, body["objects"]))
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _archive(request: Request, selection: DateRange, objects: int) -> dict[str, Any]:
    """{"archive": {...}} as `/v1/zip` would send it, or {"archive": None, "no_archive":
    {"code", "message"}} saying why there is none."""
    settings = services(request).runtime.settings
    if objects == 0:
        return _none("nothing_selected", f"no objects between {selection.start} and {selection.end}")
    if objects > settings.stream_max_entries:
        return _none(
            "not_laid_out",
            f"{objects} objects: more than a stream may hold ({settings.stream_max_entries}), so the "
            "archive is built as a background job, which reports its size",
        )
    try:
        manifest = await services(request).downloads.resolve_range(selection)
    except (TooLarge, NothingSelected) as exc:  # the second: the photos went meanwhile
        return _none(exc.code, exc.message)
    job = manifest.size > settings.stream_max_bytes or len(manifest.entries) > settings.stream_max_entries
    return {
        "archive": {
            "id": manifest.archive_id,
            "size": manifest.size,
            "entries": len(manifest.entries),
            "filename": manifest.filename,
            "job": job,
        }
    }


def _none(code: str, message: str) -> dict[str, Any]:
    return {"archive": None, "no_archive": {"code": code, "message": message}}
