"""One classification of S3 errors, for every adapter that talks to S3.

botocore raises `ClientError`s, the lean data plane sees raw statuses and XML error codes;
both come down to (HTTP status, S3 error code), and `classify` says what that means. Each
adapter then raises its own `service.exceptions` for each kind (a 404 is `ObjectMissing`
while streaming, `ObjectNotFound` when a caller named the key, a miss for the cache).
"""

from __future__ import annotations

import enum
from typing import Any

import aiohttp
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError


class S3Error(enum.Enum):
    #: 404, NoSuchKey: the object is not there
    NOT_FOUND = "not_found"
    #: the bucket itself does not exist: a setting is wrong
    NO_BUCKET = "no_bucket"
    #: 412: If-Match / If-None-Match failed (the object changed, or already exists)
    PRECONDITION_FAILED = "precondition_failed"
    #: 416: the object is shorter than the range asked for
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    #: 403 and friends: credentials, region or bucket policy; no retry fixes it
    DENIED = "denied"
    #: 5xx, 429, SlowDown, timeouts: another attempt may succeed
    RETRYABLE = "retryable"
    #: anything else: a bad request that would fail again
    OTHER = "other"


_RETRYABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "TooManyRequests"}
)
_DENIED_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

#: Errors below HTTP (resets, refused connections, timeouts, a body cut short): worth a retry.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    HTTPClientError,
    BotoConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
    IncompleteReadError,
    aiohttp.ClientError,
    OSError,  # TimeoutError and ConnectionError included
)


def classify(status: int, code: str) -> S3Error:
    if code == "NoSuchBucket":
        return S3Error.NO_BUCKET
    if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
        return S3Error.NOT_FOUND
    if status == 412 or code == "PreconditionFailed":
        return S3Error.PRECONDITION_FAILED
    if status == 416 or code == "InvalidRange":
        return S3Error.RANGE_NOT_SATISFIABLE
    if status == 403 or code in _DENIED_CODES:
        return S3Error.DENIED
    if status >= 500 or status in _RETRYABLE_STATUS or code in _RETRYABLE_CODES:
        return S3Error.RETRYABLE
    return S3Error.OTHER


def client_error_parts(exc: ClientError) -> tuple[int, str, str]:
    """(HTTP status, S3 error code, message) of a botocore `ClientError`."""
    response: dict[str, Any] = dict(exc.response)
    error = response.get("Error", {})
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return status, str(error.get("Code", "")), str(error.get("Message", ""))


def classify_client_error(exc: ClientError) -> S3Error:
    status, code, _ = client_error_parts(exc)
    return classify(status, code)


def describe(exc: BaseException) -> str:
    """A short text for logs and error messages: the S3 code or the exception's own."""
    if isinstance(exc, ClientError):
        status, code, message = client_error_parts(exc)
        return f"{code or status} {message}".strip()
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_code_of(body: bytes | str, status: int) -> str:
    """The `<Code>` of an S3 XML error body, or the status as text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "<Code>" in text:
        return text.split("<Code>", 1)[1].split("</Code>", 1)[0]
    return str(status)
