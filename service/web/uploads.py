"""The upload API: sign, read, receive the body (folder storage), complete, abandon.

Thin: parse, ask `Uploads` (service/uploads.py), translate. Every upload belongs to the
`sub` of the caller that made it; anyone else gets 404 for it (an admin sees all).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.upload_request import body_signature
from service.uploads import Uploads, view
from service.web.bodies import read_json
from service.web.context import caller_of, services


def _uploads(request: Request) -> Uploads:
    return services(request).uploads


def _doc(request: Request, doc: dict[str, Any]) -> dict[str, Any]:
    doc["status_url"] = str(request.url_for("upload", upload_id=doc["id"]))
    doc["complete_url"] = str(request.url_for("upload_complete", upload_id=doc["id"]))
    return doc


async def create_upload(request: Request) -> Response:
    def body_url(upload_id: str, expires: int) -> str:
        base = str(request.url_for("upload_body", upload_id=upload_id))
        sig = body_signature(services(request).runtime.link_key, upload_id, expires)
        return f"{base}?expires={expires}&sig={sig}"

    ticket = await _uploads(request).create(caller_of(request), await read_json(request), body_url=body_url)
    doc = _doc(request, view(ticket.record))
    doc.update(url=ticket.url, method="PUT", headers=ticket.headers)
    return JSONResponse(doc, status_code=201, headers={"Location": doc["status_url"]})


async def get_upload(request: Request) -> Response:
    record = await _uploads(request).get(caller_of(request), request.path_params["upload_id"])
    return JSONResponse(_doc(request, view(record)))


async def put_body(request: Request) -> Response:
    """The folder default's upload URL: the signed query is the credential."""
    crc = await _uploads(request).receive(
        request.path_params["upload_id"],
        expires=request.query_params.get("expires", ""),
        sig=request.query_params.get("sig", ""),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.stream(),
    )
    return Response(status_code=200, headers={"ETag": f'"{crc:08x}"'})


async def complete_upload(request: Request) -> Response:
    record = await _uploads(request).complete(caller_of(request), request.path_params["upload_id"])
    return JSONResponse(_doc(request, view(record)))


async def delete_upload(request: Request) -> Response:
    await _uploads(request).abandon(caller_of(request), request.path_params["upload_id"])
    return Response(status_code=204)
