"""The S3 data plane: object GETs and listings, SigV4-signed here, off botocore.

aioboto3 remains the control plane (HEAD, multipart uploads, bucket settings), where its
completeness matters more than its cost. Object bodies and listings are the hot path: a
stream of 1,000 photos is 1,000 GETs, and botocore's per-request CPU (about 2 ms) would
make a 2-core server CPU-bound long before the network. Object bodies go through the lean
keep-alive client of `service/s3/http1.py` (aiohttp's per-request Python cost was most of
a photo's CPU); listings, a few requests per day listed, through an aiohttp pool.

Listings ask for `encoding-type=url`: a key holding a character XML 1.0 cannot carry
(most C0 controls) would otherwise make the whole page unparseable, and with it the day.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from urllib.parse import unquote_plus, urlsplit
from xml.etree import ElementTree

import aiohttp

from service.constants import READ_CHUNK_BYTES, S3_LIST_PAGE
from service.exceptions import ObjectChanged, ObjectMissing, SourceError, SourceUnavailable
from service.s3.credentials import CredentialsProvider
from service.s3.errors import S3Error, classify, error_code_of
from service.s3.http1 import Client, TransportError
from service.sigv4 import canonical_path, canonical_query, sign_get_headers

#: One listed object: (key, size, etag without quotes, mtime in seconds).
Row = tuple[str, int, str, int]


class ObjectGetter:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        http: Client,
        *,
        endpoint_url: str | None,
        region: str,
        credentials: CredentialsProvider,
    ) -> None:
        self._session = session
        self._http = http
        self._region = region
        self._credentials = credentials
        if endpoint_url:
            parts = urlsplit(endpoint_url)
            self._scheme, self._host, self._path_style = parts.scheme, parts.netloc, True
        else:
            self._scheme, self._host, self._path_style = "https", f"s3.{region}.amazonaws.com", False

    @property
    def connections_opened(self) -> int:
        """Connections the object GETs opened so far (tests: keep-alive reuse)."""
        return self._http.connections_opened

    def _target(self, bucket: str, key: str) -> tuple[str, str]:
        if self._path_style:
            return self._host, f"/{bucket}/{key}"
        return f"{bucket}.{self._host}", f"/{key}"

    async def get(
        self, bucket: str, key: str, *, offset: int, etag: str, what: str, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes from `offset` (to the end, or `length` bytes), in chunks of
        at most READ_CHUNK_BYTES. `etag` non-empty: `ObjectChanged` if it differs."""
        host, path = self._target(bucket, key)
        headers = sign_get_headers(
            host=host, path=path, credentials=await self._credentials.current(), region=self._region
        )
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            headers["range"] = f"bytes={offset}-{end}"
        if etag:
            headers["if-match"] = f'"{etag}"'
        try:
            response = await self._http.get(self._scheme, host, canonical_path(path), headers)
        except TransportError as exc:
            raise SourceUnavailable(f"{what}: {exc}") from exc
        except ValueError as exc:  # a line break in the ETag: not a request to send
            raise SourceError(f"{what}: {exc}") from exc
        try:
            await _check(
                response.status, response.headers, response.read, offset if "range" in headers else None, what
            )
            remaining = int(response.headers.get("content-length", "-1"))
            while remaining != 0:
                want = READ_CHUNK_BYTES if remaining < 0 else min(READ_CHUNK_BYTES, remaining)
                chunk = await response.read(want)
                if len(chunk) < want:
                    if remaining >= 0:
                        raise SourceUnavailable(f"{what}: connection closed mid-body")
                    if not chunk:
                        return  # no Content-Length: the body simply ended
                if remaining > 0:
                    remaining -= len(chunk)
                yield chunk
        except TransportError as exc:
            raise SourceUnavailable(f"{what}: {exc}") from exc
        finally:
            response.release()

    async def list(self, bucket: str, prefix: str, *, what: str) -> list[Row]:
        """ListObjectsV2, every page, in key order. Parsed with the C ElementTree:
        botocore's parser costs ~50 us a key, a cold date range's TTFB."""
        host, path = self._target(bucket, "")
        if self._path_style:
            path = f"/{bucket}"
        found: list[Row] = []
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(S3_LIST_PAGE), "encoding-type": "url"}
        while True:
            headers = sign_get_headers(
                host=host,
                path=path,
                credentials=await self._credentials.current(),
                region=self._region,
                query=query,
            )
            url = f"{self._scheme}://{host}{canonical_path(path)}?{canonical_query(query)}"
            try:
                async with self._session.get(url, headers=headers) as response:
                    await _check(
                        response.status, response.headers, response.content.read, None, what, listing=True
                    )
                    body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
            token = _parse_listing(body, found, what)
            if not token:
                return found
            query["continuation-token"] = token


def _parse_listing(body: bytes, found: list[Row], what: str) -> str:
    """Append a page's objects to `found`; return the continuation token ("" at the end)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SourceUnavailable(f"{what}: unreadable listing: {exc}") from exc
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    encoded = (root.findtext(f"{ns}EncodingType") or "").lower() == "url"
    for item in root.iter(f"{ns}Contents"):
        key = item.findtext(f"{ns}Key") or ""
        modified = item.findtext(f"{ns}LastModified") or "1970-01-01T00:00:00Z"
        found.append(
            (
                unquote_plus(key) if encoded else key,
                int(item.findtext(f"{ns}Size") or 0),
                (item.findtext(f"{ns}ETag") or "").strip('"'),
                int(datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()),
            )
        )
    truncated = (root.findtext(f"{ns}IsTruncated") or "false") == "true"
    return (root.findtext(f"{ns}NextContinuationToken") or "") if truncated else ""


async def _check(
    status: int,
    headers: Mapping[str, str],
    read: Callable[[int], Awaitable[bytes]],
    offset: int | None,
    what: str,
    *,
    listing: bool = False,
) -> None:
    """Raise the fitting SourceError for an answer that is not the body asked for.
    `headers` answer `.get` for lower-case names; `read(n)` reads the error body;
    `offset`: a ranged GET from this byte (None: not ranged)."""
    if status in (200, 206):
        if offset is not None and not headers.get("content-range", "").startswith(f"bytes {offset}-"):
            raise SourceError(f"{what}: the server ignored the Range header")
        return
    code = error_code_of(await read(2048), status)
    kind = classify(status, code)
    if kind is S3Error.NO_BUCKET or (listing and kind is S3Error.NOT_FOUND):
        raise SourceError(f"{what}: the bucket does not exist (check ZIPEDGE_SOURCE)")
    if kind is S3Error.NOT_FOUND:
        raise ObjectMissing(f"{what}: not found")
    if kind in (S3Error.PRECONDITION_FAILED, S3Error.RANGE_NOT_SATISFIABLE):
        raise ObjectChanged(f"{what}: the object changed ({code})")
    if kind is S3Error.RETRYABLE:
        raise SourceUnavailable(f"{what}: {code}")
    if kind is S3Error.DENIED:
        raise SourceError(
            f"{what}: {code} (S3 denied access: check the credentials, region and bucket policy)"
        )
    raise SourceError(f"{what}: HTTP {status} {code}")


@contextlib.asynccontextmanager
async def open_object_getter(
    *,
    endpoint_url: str | None,
    region: str,
    credentials: CredentialsProvider,
    max_connections: int,
    timeout_s: float,
) -> AsyncIterator[ObjectGetter]:
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
    timeout = aiohttp.ClientTimeout(sock_connect=timeout_s, sock_read=timeout_s)
    # Reading pauses once two chunks wait for the prefetcher: it reserves budget per chunk.
    http = Client(limit=max_connections, timeout_s=timeout_s, high_water=2 * READ_CHUNK_BYTES)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
            yield ObjectGetter(
                session, http, endpoint_url=endpoint_url, region=region, credentials=credentials
            )
    finally:
        await http.aclose()
