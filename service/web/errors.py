"""Every error leaves as JSON: {"error": {"code": "...", "message": "..."}}."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.constants import RETRY_AFTER_UNAVAILABLE_S
from service.exceptions import DependencyUnavailable, RangeNotSatisfiable, SourceUnavailable, ZipedgeError

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def zipedge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ZipedgeError)
    headers = None
    if isinstance(exc, DependencyUnavailable | SourceUnavailable):
        headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
    elif isinstance(exc, RangeNotSatisfiable):
        headers = {"Content-Range": f"bytes */{exc.size}", "Accept-Ranges": "bytes"}
    if exc.status_code >= 500:
        logger.warning("%s %s failed: %r", request.method, request.url.path, exc)
    return error_response(exc.status_code, exc.code, exc.message, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), dict(exc.headers or {})
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error")


exception_handlers = {
    ZipedgeError: zipedge_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
