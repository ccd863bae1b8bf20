"""The exception tree of zipedge.

Adapters translate their dependency's errors into these at the boundary (`raise ... from
exc`), so no botocore, httpx or redis exception ever reaches a request handler.

* ZipedgeError
  + ConfigError                  bad settings at startup
  + RequestError                 the caller's fault: a 4xx JSON answer
  | - InvalidParameter      400  bad date, from after to, range too long, bad JSON
  | - InvalidKey            400  `..`, absolute, control characters, too long
  | - HostNotAllowed        400  URL entry outside ZIPEDGE_HTTP_ALLOW or to a private address
  | - Unauthorized          401  no bearer token, or one that fails verification
  | - Forbidden             403  a valid identity without the scope; a bad or expired link
  | - NothingSelected       404  the selection resolved to no object
  | - UnknownArchive        404  no manifest stored under that id
  | - UnknownJob            404  no job with that id
  | - JobReady              409  a cancel came after the job's archive was committed
  | - UnknownUpload         404  no upload with that id (or someone else's)
  | - BadUploadLink         403  an upload body URL tampered with or expired
  | - UploadIncomplete      409  complete before the body arrived
  | - UploadExists          412  a second body for the same upload
  | - UploadMismatch        422  the stored body is not what was announced
  | - ObjectNotFound        404  a named key or URL does not exist
  | - TooLarge              413  over the hard entry or byte limits
  | - RangeNotSatisfiable   416  a Range wholly past the end of the archive
  | - RateLimited           429  over a rate limit or a quota (`retry_after` seconds)
  + SourceError                  reading an object failed
  | - ObjectMissing              the object vanished after the manifest was made
  | - ObjectChanged              ETag or size differ from the manifest
  | - SourceUnavailable     503  network error, timeout, 5xx: worth a retry
  + StreamAborted                a stream failed after its headers were sent
  + CacheError                   the archive cache (never the client's download)
  | - CacheWriteFailed           a cache object could not be written
  | - CacheMisconfigured         the cache refused access (403): a setting, not a miss
  + BuildFailed                  a background build gave up (`retryable` says if for now)
  + JobCancelled                 a build found its job cancelled before committing
  + DependencyUnavailable   503  a store or Redis is down
"""

from __future__ import annotations

import math


class ZipedgeError(Exception):
    """Base of every error zipedge raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigError(ZipedgeError):
    """A setting is missing or malformed; raised at startup, never per request."""

    code = "config_error"


class RequestError(ZipedgeError):
    status_code = 400
    code = "bad_request"


class InvalidParameter(RequestError):
    code = "invalid_parameter"


class InvalidKey(RequestError):
    code = "invalid_key"


class HostNotAllowed(RequestError):
    code = "host_not_allowed"


class Unauthorized(RequestError):
    """No credentials, or credentials that do not verify: the client should authenticate."""

    status_code = 401
    code = "unauthorized"


class Forbidden(RequestError):
    """A verified identity that may not do this, or a signed link that is wrong or expired."""

    status_code = 403
    code = "forbidden"


class NothingSelected(RequestError):
    status_code = 404
    code = "nothing_selected"


class UnknownArchive(RequestError):
    status_code = 404
    code = "unknown_archive"


class UnknownJob(RequestError):
    status_code = 404
    code = "unknown_job"


class JobReady(RequestError):
    """`DELETE /v1/jobs/{id}` of a job whose archive is committed: it cannot be undone,
    and is not called cancelled (the job reads `ready`, with its `download_url`)."""

    status_code = 409
    code = "job_ready"


class UnknownUpload(RequestError):
    status_code = 404
    code = "unknown_upload"


class BadUploadLink(RequestError):
    status_code = 403
    code = "bad_upload_link"


class UploadIncomplete(RequestError):
    status_code = 409
    code = "upload_incomplete"


class UploadExists(RequestError):
    status_code = 412
    code = "upload_exists"


class UploadMismatch(RequestError):
    """Size, type or CRC-32 of the stored body differ from what POST /v1/uploads said."""

    status_code = 422
    code = "upload_mismatch"


class ObjectNotFound(RequestError):
    status_code = 404
    code = "object_not_found"


class TooLarge(RequestError):
    status_code = 413
    code = "too_large"


class RateLimited(RequestError):
    """Over a per-client rate limit or quota; `retry_after` is when trying again can work
    (whole seconds, at least 1)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class RangeNotSatisfiable(RequestError):
    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        #: the archive's size, for `Content-Range: bytes */<size>`
        self.size = size


class SourceError(ZipedgeError):
    """Reading an object failed. `retryable` says whether another attempt may succeed."""

    status_code = 502
    code = "source_error"
    retryable = False


class ObjectMissing(SourceError):
    code = "object_missing"


class ObjectChanged(SourceError):
    code = "object_changed"


class SourceUnavailable(SourceError):
    status_code = 503
    code = "source_unavailable"
    retryable = True


class StreamAborted(ZipedgeError):
    """A stream failed after its headers went out; the connection must be cut."""

    code = "stream_aborted"


class CacheError(ZipedgeError):
    """Something went wrong with the archive cache; streams carry on without it."""

    code = "cache_error"


class CacheWriteFailed(CacheError):
    """A cache object could not be written; the stream it tees from is unaffected."""

    code = "cache_write_failed"


class CacheMisconfigured(CacheError):
    """The cache answered 403 (bucket policy, credentials): a configuration error that no
    retry fixes. Requests stream without teeing, loudly, instead of rebuilding forever."""

    code = "cache_misconfigured"


class JobCancelled(ZipedgeError):
    """The build's job was cancelled before its commit: nothing was published."""

    code = "job_cancelled"


class BuildFailed(ZipedgeError):
    """A background build cannot finish; `retryable` says whether another attempt may."""

    code = "build_failed"

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class DependencyUnavailable(ZipedgeError):
    status_code = 503
    code = "dependency_unavailable"
