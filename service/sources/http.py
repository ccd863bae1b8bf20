"""HTTP origins: absolute http(s) URLs (Cloudinary, any CDN) read through httpx.

Every URL passes the gates of `urlguard.py` (allow list, public addresses only, pinned
connections); redirects are followed here by hand, at most `HTTP_MAX_REDIRECTS`, each
target passing the allow list again (another allowed host is fine, https→http is not).

Refusals are `HostNotAllowed` (400) from `stat` (request time: the caller posted a URL that
leads somewhere forbidden) and a non-retryable `SourceError` from `read` (stream time).

A read resumed after a failure asks for the rest with `If-Range` on the object's strong
ETag, so the bytes cannot come from another version. An origin that gives no strong ETag
cannot be resumed safely: the read then fails rather than splice two versions into one
member whose CRC the writer would compute over the mix.
"""

from __future__ import annotations

import contextlib
import datetime
import re
from collections.abc import AsyncGenerator, Iterator
from email.utils import parsedate_to_datetime
from typing import cast

import httpx

from service import __version__, constants
from service.exceptions import (
    HostNotAllowed,
    InvalidParameter,
    ObjectChanged,
    ObjectMissing,
    ObjectNotFound,
    RequestError,
    SourceError,
    SourceUnavailable,
    ZipedgeError,
)
from service.sources.base import ObjectInfo
from service.sources.urlguard import AddressRefused, PinnedTransport, normalise_allow_hosts, validate_url

__all__ = ["HttpOrigin"]

#: HEAD answers after which `stat` asks again with a one-byte ranged GET: methods not
#: supported, and 403 because URLs presigned for GET (S3-style) refuse HEAD.
_HEAD_REFUSED = frozenset({403, 405, 501})

#: Retryable answers besides 5xx: request timeout, too early, too many requests.
_RETRYABLE_STATUS = frozenset({408, 425, 429})

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(?P<start>\d+)-\d+|\*)/(?P<total>\d+|\*)", re.ASCII | re.IGNORECASE)
_DIGITS = re.compile(r"\d+", re.ASCII)


def _timeout(timeout_s: float) -> httpx.Timeout:
    """Every read, write and pool wait within `timeout_s`; connecting within the connect
    timeout at most (a dead host is known sooner than a slow one)."""
    return httpx.Timeout(timeout_s, connect=min(timeout_s, constants.HTTP_CONNECT_TIMEOUT_S))


def _user_agent() -> str:
    return f"zipedge/{__version__}"


# --- URL and address checks -----------------------------------------------------------------


# --- error translation ----------------------------------------------------------------------


@contextlib.contextmanager
def _translated(url: str, *, reading: bool) -> Iterator[None]:
    """Turn httpx errors and our refusals into zipedge errors, the most specific that fits.

    `reading` says we are inside `read`, where the Reader contract wants SourceErrors only:
    refusals then become non-retryable SourceErrors instead of 400s."""
    try:
        yield
    except AddressRefused as exc:
        error: type[ZipedgeError] = SourceError if reading else HostNotAllowed
        raise error(f"{url}: {exc}") from exc
    except RequestError as exc:  # validate_url on the URL or a redirect target
        if not reading:
            raise
        raise SourceError(f"{url}: {exc.message}") from exc
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        # Connect/read/write/pool timeouts, resets, a body cut short: worth resuming.
        raise SourceUnavailable(f"{url}: {_describe(exc)}") from exc
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, httpx.CookieConflict) as exc:
        # The rest (local protocol errors, unsupported protocol...) would fail again.
        raise SourceError(f"{url}: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raise_for_status(response: httpx.Response, url: str, *, missing: type[ZipedgeError]) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{url}: HTTP {status} {response.reason_phrase}".rstrip()
    if status in (404, 410):
        raise missing(message)
    if status >= 500 or status in _RETRYABLE_STATUS:
        raise SourceUnavailable(message)
    # Other 4xx, and 3xx we do not follow (304, a redirect without Location, too many hops).
    raise SourceError(message)


def _require_identity(response: httpx.Response, url: str) -> None:
    encoding = _header(response.headers, "content-encoding").lower()
    if encoding not in ("", "identity"):
        # Its length and bytes are not the stored object's: the archive would be wrong.
        raise SourceError(f"{url}: origin sent Content-Encoding {encoding!r} although identity was asked for")


# --- header parsing ---------------------------------------------------------------------------


def _header(headers: httpx.Headers, name: str) -> str:
    value: str = headers.get(name, "")  # typed Any by httpx
    return value.strip()


def _validator(headers: httpx.Headers) -> str:
    """The object's validator as `ObjectInfo.etag` holds it: a strong ETag without quotes
    (`abc`), a weak one as `W/abc` (so `read` knows not to use it in If-Range), else the
    Last-Modified date as sent (an HTTP-date always has spaces, an ETag never), else ""."""
    etag = _header(headers, "etag")
    if not etag:
        return _header(headers, "last-modified")
    weak = etag.startswith("W/")
    opaque = etag[2:] if weak else etag
    if len(opaque) >= 2 and opaque[0] == opaque[-1] == '"':
        opaque = opaque[1:-1]
    return f"W/{opaque}" if weak else opaque


def _same_validator(actual: str, expected: str) -> bool:
    # Weak comparison (RFC 9110 §8.8.3.2): some servers weaken an ETag on one answer only.
    return bool(actual) and actual.removeprefix("W/") == expected.removeprefix("W/")


def _mtime(headers: httpx.Headers) -> int:
    value = _header(headers, "last-modified")
    if not value:
        return 0
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0
    if when.tzinfo is None:  # "-0000" means UTC; timestamp() would take it as local time
        when = when.replace(tzinfo=datetime.UTC)
    return max(0, int(when.timestamp()))


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = _header(headers, name)
    return int(value) if _DIGITS.fullmatch(value) else None


def _content_range(headers: httpx.Headers) -> tuple[int | None, int | None]:
    """(first byte, total size) from Content-Range; None where absent or `*`."""
    match = _CONTENT_RANGE.fullmatch(_header(headers, "content-range"))
    if match is None:
        return None, None
    start = int(match["start"]) if match["start"] is not None else None
    total = int(match["total"]) if match["total"] != "*" else None
    return start, total


def _strong(etag: str) -> bool:
    """Whether a validator as `_validator` gives it is a strong ETag: the one kind that
    names exact bytes (weak ETags and dates do not, RFC 9110 §8.8.1, §13.1.5)."""
    return bool(etag) and not etag.startswith("W/") and " " not in etag


def _range_headers(offset: int, etag: str, length: int | None) -> dict[str, str]:
    if offset == 0 and length is None:
        return {}
    end = "" if length is None else str(offset + length - 1)
    headers = {"Range": f"bytes={offset}-{end}"}
    if offset:
        # If-Range makes "the rest, if unchanged" one atomic question (`read` only reads
        # from an offset with a strong ETag).
        headers["If-Range"] = f'"{etag}"'
    return headers


# --- the origin -----------------------------------------------------------------------------


class HttpOrigin:
    """Reads absolute http(s) URLs; implements `service.sources.base.Reader`.

    Keys are URLs; `stat` returns them normalised (`validate_url`). The client we build
    carries the address guard and pinning; an injected `client` is used as is (tests, or a
    caller that brings its own transport), so it gets the allow list and redirect rules but
    NOT the address checks.
    """

    def __init__(
        self,
        *,
        allow_hosts: frozenset[str],
        allow_private: bool = False,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = constants.HTTP_READ_TIMEOUT_S,
    ) -> None:
        self._allow = normalise_allow_hosts(allow_hosts)
        self._owns_client = client is None
        if client is None:
            # Keep every idle connection: a stream fetches many small photos from few hosts,
            # and a new TLS handshake costs more than an idle socket.
            limits = httpx.Limits(
                max_connections=constants.HTTP_MAX_CONNECTIONS,
                max_keepalive_connections=constants.HTTP_MAX_CONNECTIONS,
            )
            client = httpx.AsyncClient(
                # The client ignores `limits=` when given a transport, so they go there.
                transport=PinnedTransport(allow_private=allow_private, limits=limits),
                timeout=_timeout(timeout_s),
                follow_redirects=False,
                trust_env=False,  # no proxy or netrc from the environment: they would bypass the guard
                headers={"User-Agent": _user_agent()},
            )
        self._client = client

    def __repr__(self) -> str:
        return f"HttpOrigin(allow_hosts={sorted(self._allow)!r})"

    async def stat(self, key: str) -> ObjectInfo:
        url = validate_url(key, allow_hosts=self._allow)
        with _translated(url, reading=False):
            response = await self._open("HEAD", url, {})
            await response.aclose()
            if response.status_code in _HEAD_REFUSED or (
                response.is_success and _int_header(response.headers, "content-length") is None
            ):
                # Headers are all we need; closing at once means a server that ignores the
                # range and starts sending the whole object costs us nothing more.
                response = await self._open("GET", url, {"Range": "bytes=0-0"})
                await response.aclose()
        size, headers = _stat_size(response, url), response.headers
        return ObjectInfo(key=url, size=size, etag=_validator(headers), mtime=_mtime(headers))

    async def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        # Typed as the async generator it is (a subtype of the protocol's AsyncIterator) so
        # callers can hand it to contextlib.aclosing.
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if offset and not _strong(etag):
            # Without a strong validator the rest could come from another version, and the
            # member would be spliced from two with a CRC computed over the mix.
            raise SourceError(
                f"{key}: cannot resume from byte {offset}: the origin gives no strong ETag "
                f"({etag or 'none'!r}), so the rest may belong to another version"
            )
        with _translated(key, reading=True):
            url = validate_url(key, allow_hosts=self._allow)
            response = await self._open("GET", url, _range_headers(offset, etag, length))
        try:
            if _nothing_left(response, url, offset):
                return
            _raise_for_status(response, url, missing=ObjectMissing)
            _require_identity(response, url)
            _check_read_answer(response, url, offset=offset, etag=etag)
            async with contextlib.aclosing(_body(response, url)) as body:
                async for chunk in body:
                    yield chunk
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _open(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        """Send the request and follow redirects ourselves; the caller closes the response."""
        # Accept-Encoding identity: a photo re-compressed on the fly would change length and bytes.
        headers = {"Accept-Encoding": "identity", **headers}
        first = url
        for _ in range(constants.HTTP_MAX_REDIRECTS + 1):
            request = self._client.build_request(method, url, headers=headers)
            response = await self._client.send(request, stream=True, follow_redirects=False)
            if not response.is_redirect:
                return response
            await response.aclose()
            url = self._redirect_target(response, url)
        raise SourceError(f"{first}: more than {constants.HTTP_MAX_REDIRECTS} redirects")

    def _redirect_target(self, response: httpx.Response, url: str) -> str:
        location = response.headers["location"]
        try:
            target = response.url.join(location).copy_with(fragment=None)
        except httpx.InvalidURL as exc:
            raise SourceError(f"{url}: redirect to a malformed Location {location!r}") from exc
        if response.url.scheme == "https" and target.scheme == "http":
            raise HostNotAllowed(f"{url}: redirect from https to plain http refused ({target})")
        try:
            return validate_url(str(target), allow_hosts=self._allow)
        except InvalidParameter as exc:  # the origin's fault, not the caller's
            raise SourceError(f"{url}: redirect to an unusable URL: {exc.message}") from exc
        except HostNotAllowed as exc:
            raise HostNotAllowed(f"{url}: redirects outside the allow list: {exc.message}") from exc


async def _body(response: httpx.Response, url: str) -> AsyncGenerator[bytes, None]:
    """The body in pieces of `READ_CHUNK_BYTES` (the last one shorter), checked for length.

    Bytes that arrived before a failure are yielded before the error, so the caller resumes
    right after them. (httpx's own `aiter_raw(chunk_size)` would hold up to a chunk back and
    drop it on an error.) `aiter_raw`, not `aiter_bytes`: no decoding, ever."""
    expected = _int_header(response.headers, "content-length")
    received = 0
    pending = bytearray()
    failure: SourceError | None = None
    # httpx types aiter_raw as an AsyncIterator; it is an async generator, closed here so an
    # abandoned read leaves nothing for the garbage collector.
    raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(raw):
        try:
            with _translated(url, reading=True):
                async for data in raw:
                    received += len(data)
                    pending += data
                    while len(pending) >= constants.READ_CHUNK_BYTES:
                        yield bytes(pending[: constants.READ_CHUNK_BYTES])
                        del pending[: constants.READ_CHUNK_BYTES]
        except SourceError as exc:
            failure = exc
    if pending:
        yield bytes(pending)
    if failure is not None:
        raise failure
    if expected is not None and received < expected:
        # h11 raises on a short body itself; this catches any transport that does not.
        raise SourceUnavailable(f"{url}: body ended after {received} of {expected} bytes")
    if expected is not None and received > expected:
        raise SourceError(f"{url}: body longer than its Content-Length {expected}")


def _stat_size(response: httpx.Response, url: str) -> int:
    if response.status_code == 416 and _content_range(response.headers)[1] == 0:
        return 0  # bytes=0-0 of an empty object
    _raise_for_status(response, url, missing=ObjectNotFound)
    _require_identity(response, url)
    if response.status_code == 206:
        size = _content_range(response.headers)[1]
    else:
        size = _int_header(response.headers, "content-length")
    if size is None:
        raise SourceError(f"{url}: origin gives no size (no Content-Length, no Content-Range total)")
    return size


def _nothing_left(response: httpx.Response, url: str, offset: int) -> bool:
    """A resume at exactly the end (the last bytes arrived, the connection died before the
    body's end was seen) gets 416 with the total size: nothing to read, nothing wrong."""
    if offset == 0 or response.status_code != 416:
        return False
    _, total = _content_range(response.headers)
    if total == offset:
        return True
    raise ObjectChanged(f"{url}: range from byte {offset} not satisfiable (size now {total})")


def _check_read_answer(response: httpx.Response, url: str, *, offset: int, etag: str) -> None:
    validator = _validator(response.headers)
    changed = bool(etag) and not _same_validator(validator, etag)
    if changed:
        raise ObjectChanged(f"{url}: validator is now {validator or 'missing'!r}, the manifest has {etag!r}")
    status = response.status_code
    if offset == 0:
        # 206 to a part from byte 0; 200 from an origin that ignores Range (the reader
        # stops at the part's end and closes).
        if status == 200 or (status == 206 and _content_range(response.headers)[0] == 0):
            return
        raise SourceError(f"{url}: HTTP {status} to a GET from byte 0")
    if status == 200:
        # Same validator (or none known) and still the whole body: ranges are not supported.
        # Reading past `offset` bytes to resume would cost the whole object again; fail instead.
        raise ObjectChanged(f"{url}: origin answered a ranged GET with the whole object (no range support)")
    start, _ = _content_range(response.headers)
    if status != 206 or start != offset:
        raise SourceError(f"{url}: HTTP {status}, Content-Range start {start}, to a range from byte {offset}")
