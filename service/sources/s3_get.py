"""The data plane of the S3 source: object GETs on a plain aiohttp pool, SigV4-signed here.

aioboto3 remains the control plane (listings, HEAD, multipart uploads), where its
completeness matters more than its cost. Object bodies are the hot path: a stream of
1,000 photos is 1,000 GETs, and botocore's per-request CPU (about 2 ms against 0.3 ms
here, see service/sigv4.py) would make a 2-core server CPU-bound long before the network.

Credentials come from the settings, or from the aioboto3 client's provider chain on
every request (refreshable credentials refresh themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from urllib.parse import urlsplit
from xml.etree import ElementTree

import aiohttp

from service.constants import READ_CHUNK_BYTES, S3_CONNECT_TIMEOUT_S, S3_LIST_PAGE, S3_READ_TIMEOUT_S
from service.exceptions import ObjectChanged, ObjectMissing, SourceError, SourceUnavailable
from service.sigv4 import Credentials, canonical_path, canonical_query, sign_get_headers

CredentialsFn = Callable[[], Awaitable[Credentials]]

#: Statuses worth another attempt (S3 SlowDown is 503, throttling 429).
_RETRYABLE = {408, 429, 500, 502, 503, 504}


def client_credentials(client: object) -> CredentialsFn:
    """The aioboto3 client's own credentials (env, profile, IAM role...), always current."""

    async def current() -> Credentials:
        provider = client._request_signer._credentials  # type: ignore[attr-defined]
        frozen = await provider.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return current


class ObjectGetter:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        endpoint_url: str | None,
        region: str,
        credentials: CredentialsFn,
    ) -> None:
        self._session = session
        self._region = region
        self._credentials = credentials
        if endpoint_url:
            parts = urlsplit(endpoint_url)
            self._scheme, self._host, self._path_style = parts.scheme, parts.netloc, True
        else:
            self._scheme, self._host, self._path_style = "https", f"s3.{region}.amazonaws.com", False

    def _target(self, bucket: str, key: str) -> tuple[str, str]:
        if self._path_style:
            return self._host, f"/{bucket}/{key}"
        return f"{bucket}.{self._host}", f"/{key}"

    async def get(self, bucket: str, key: str, *, offset: int, etag: str, what: str) -> AsyncIterator[bytes]:
        host, path = self._target(bucket, key)
        headers = sign_get_headers(
            host=host, path=path, credentials=await self._credentials(), region=self._region
        )
        if offset:
            headers["range"] = f"bytes={offset}-"
        if etag:
            headers["if-match"] = f'"{etag}"'
        url = f"{self._scheme}://{host}{canonical_path(path)}"
        try:
            async with self._session.get(url, headers=headers, auto_decompress=False) as response:
                await _check(response, offset, what)
                remaining = int(response.headers.get("content-length", "-1"))
                while remaining != 0:
                    want = READ_CHUNK_BYTES if remaining < 0 else min(READ_CHUNK_BYTES, remaining)
                    try:
                        chunk = await response.content.readexactly(want)
                    except asyncio.IncompleteReadError as exc:
                        if remaining >= 0 or not exc.partial:
                            raise SourceUnavailable(f"{what}: connection closed mid-body") from exc
                        chunk = exc.partial  # no Content-Length: the body simply ended
                        remaining = 0
                    if remaining > 0:
                        remaining -= len(chunk)
                    yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def list(self, bucket: str, prefix: str, *, what: str) -> list[tuple[str, int, str, int]]:
        """ListObjectsV2, every page: (key, size, etag, mtime) in key order. Parsed with the
        C ElementTree: botocore's parser costs ~50 us a key, a cold date range's TTFB."""
        host, path = self._target(bucket, "")
        if self._path_style:
            path = f"/{bucket}"
        found: list[tuple[str, int, str, int]] = []
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(S3_LIST_PAGE)}
        while True:
            headers = sign_get_headers(
                host=host, path=path, credentials=await self._credentials(), region=self._region, query=query
            )
            url = f"{self._scheme}://{host}{canonical_path(path)}?{canonical_query(query)}"
            try:
                async with self._session.get(url, headers=headers) as response:
                    if response.status == 404:  # the bucket itself: no retry will help
                        raise SourceError(f"{what}: bucket {bucket!r} not found (check ZIPEDGE_SOURCE)")
                    await _check(response, 0, what)
                    body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
            token = _parse_listing(body, found, what)
            if not token:
                return found
            query["continuation-token"] = token


def _parse_listing(body: bytes, found: list[tuple[str, int, str, int]], what: str) -> str:
    """Append a page's objects to `found`; return the continuation token ("" at the end)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise SourceUnavailable(f"{what}: unreadable listing: {exc}") from exc
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    for item in root.iter(f"{ns}Contents"):
        key = item.findtext(f"{ns}Key") or ""
        modified = item.findtext(f"{ns}LastModified") or "1970-01-01T00:00:00Z"
        found.append(
            (
                key,
                int(item.findtext(f"{ns}Size") or 0),
                (item.findtext(f"{ns}ETag") or "").strip('"'),
                int(datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp()),
            )
        )
    truncated = (root.findtext(f"{ns}IsTruncated") or "false") == "true"
    return (root.findtext(f"{ns}NextContinuationToken") or "") if truncated else ""


async def _check(response: aiohttp.ClientResponse, offset: int, what: str) -> None:
    status = response.status
    if status in (200, 206):
        if offset and not response.headers.get("content-range", "").startswith(f"bytes {offset}-"):
            raise SourceError(f"{what}: the server ignored the Range header")
        return
    body = (await response.content.read(2048)).decode("utf-8", "replace")
    code = body.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in body else str(status)
    if status == 404:
        raise ObjectMissing(f"{what}: not found")
    if status in (412, 416):
        raise ObjectChanged(f"{what}: the object changed ({code})")
    if status in _RETRYABLE:
        raise SourceUnavailable(f"{what}: {code}")
    if status == 403:
        raise SourceError(
            f"{what}: {code} (S3 denied access: check the credentials, region and bucket policy)"
        )
    raise SourceError(f"{what}: HTTP {status} {code}")


@contextlib.asynccontextmanager
async def open_object_getter(
    *, endpoint_url: str | None, region: str, credentials: CredentialsFn, max_connections: int
) -> AsyncIterator[ObjectGetter]:
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
    timeout = aiohttp.ClientTimeout(sock_connect=S3_CONNECT_TIMEOUT_S, sock_read=S3_READ_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        yield ObjectGetter(session, endpoint_url=endpoint_url, region=region, credentials=credentials)
