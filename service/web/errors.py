"""Every error leaves as JSON: {"error": {"code": "...", "message": "..."}}, with the
headers its status promises (`Retry-After` on 429 and 503, `WWW-Authenticate` on 401)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.constants import RETRY_AFTER_UNAVAILABLE_S
from service.exceptions import (
    DependencyUnavailable,
    RangeNotSatisfiable,
    RateLimited,
    SourceUnavailable,
    Unauthorized,
    ZipedgeError,
)

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _headers(exc: ZipedgeError) -> dict[str, str] | None:
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, DependencyUnavailable | SourceUnavailable):
        return {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="zipedge", error="invalid_token"'}
    if isinstance(exc, RangeNotSatisfiable):
        return {"Content-Range": f"bytes */{exc.size}", "Accept-Ranges": "bytes"}
    return None


def error_for(exc: ZipedgeError) -> Response:
    """The JSON answer for `exc` (also used where no exception handler runs: middleware)."""
    return error_response(exc.status_code, exc.code, exc.message, _headers(exc))


async def zipedge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ZipedgeError)
    if exc.status_code >= 500:
        logger.warning("%s %s failed: %r", request.method, request.url.path, exc)
    return error_for(exc)


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
