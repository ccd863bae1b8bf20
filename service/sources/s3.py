"""An S3 bucket (AWS, MinIO, SeaweedFS, R2) as the date-partitioned root, via aiobotocore.

One client per process (`open_s3_client`, opened in the app's lifespan) is shared by every
`S3Source`; the source never closes it. botocore and aiohttp errors are translated into
`service.exceptions` at this boundary (`_translate`), so none escapes to a handler.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from service.constants import READ_CHUNK_BYTES, S3_CONNECT_TIMEOUT_S, S3_LIST_PAGE, S3_READ_TIMEOUT_S
from service.exceptions import (
    DependencyUnavailable,
    InvalidKey,
    ObjectChanged,
    ObjectMissing,
    ObjectNotFound,
    SourceError,
    SourceUnavailable,
    ZipedgeError,
)
from service.sources.base import ObjectInfo
from service.sources.s3_get import ObjectGetter

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

#: Attempts per S3 call inside botocore (first included). Few, because the fetcher retries
#: a read itself from the first missing byte, and a user waits on the other end.
S3_MAX_ATTEMPTS = 2

_RETRYABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "TooManyRequests"}
)
_DENIED_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
_TRANSIENT_ERRORS = (HTTPClientError, BotoConnectionError, IncompleteReadError, aiohttp.ClientError, OSError)


def s3_config(*, max_pool_connections: int, path_style: bool) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        # SeaweedFS/MinIO endpoints have no per-bucket DNS names.
        s3={"addressing_style": "path" if path_style else "auto"},
        max_pool_connections=max_pool_connections,
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        # botocore >= 1.36 would add CRC trailers and validate bodies, which several
        # non-AWS servers reject; sizes and CRCs are checked by the archive writer.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


@contextlib.asynccontextmanager
async def open_s3_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    access_key: str | None,
    secret_key: str | None,
    max_pool_connections: int,
) -> AsyncIterator[S3Client]:
    """One aiobotocore S3 client; None/empty settings fall back to botocore's own chain
    (environment, profile, instance role)."""
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        config=s3_config(max_pool_connections=max_pool_connections, path_style=bool(endpoint_url)),
    ) as client:
        yield client


def normalize_prefix(prefix: str) -> str:
    """Without outer slashes and ending in one unless empty: "/photos" → "photos/"."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def _unquote(etag: str) -> str:
    return etag.strip('"')


def full_object_crc32(head: Mapping[str, Any]) -> int | None:
    """The object's CRC-32 from a HeadObject answer, only if it covers the whole object.

    A COMPOSITE checksum (CRC of the parts' CRCs, value suffixed "-<parts>") is not the
    ZIP CRC. AWS states ChecksumType on every answer; SeaweedFS omits it for single-part
    PUTs, whose checksum can only be of the whole object, so a missing type is accepted
    when neither the value nor the ETag carries a part count.
    """
    value = head.get("ChecksumCRC32")
    if not isinstance(value, str) or not value:
        return None
    kind = head.get("ChecksumType")
    if kind is None:
        if "-" in value or "-" in _unquote(str(head.get("ETag", ""))):
            return None
    elif kind != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(raw, "big") if len(raw) == 4 else None


def _client_error(exc: ClientError, what: str, missing: type[SourceError | ObjectNotFound]) -> ZipedgeError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    detail = f"{what}: {code or status} {error.get('Message', '')}".rstrip()
    if code == "NoSuchBucket":
        return SourceError(f"{detail} (check the bucket in ZIPEDGE_SOURCE)")
    if status == 404 or code in ("NoSuchKey", "NotFound"):
        return missing(f"{what}: not found")
    if status == 412 or code == "PreconditionFailed":
        return ObjectChanged(f"{what}: the object's ETag changed")
    if status == 416 or code == "InvalidRange":
        return ObjectChanged(f"{what}: the object is shorter than expected")
    if status == 403 or code in _DENIED_CODES:
        # Misconfiguration: no retry will fix it.
        return SourceError(f"{detail} (S3 denied access: check the credentials, region and bucket policy)")
    if status >= 500 or status == 429 or code in _RETRYABLE_CODES:
        return SourceUnavailable(detail)
    return SourceError(detail)


@contextlib.contextmanager
def _translate(what: str, *, missing: type[SourceError | ObjectNotFound] = ObjectMissing) -> Iterator[None]:
    """Like httpx's map_httpcore_exceptions: botocore/aiohttp errors become ours."""
    try:
        yield
    except ZipedgeError:
        raise
    except ClientError as exc:
        raise _client_error(exc, what, missing) from exc
    except _TRANSIENT_ERRORS as exc:
        raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, bad parameters: not worth a retry
        raise SourceError(f"{what}: {type(exc).__name__}: {exc}") from exc


class S3Source:
    """Objects under `prefix` in `bucket`; keys in and out are relative to the prefix."""

    def __init__(
        self, client: S3Client, *, bucket: str, prefix: str, getter: ObjectGetter | None = None
    ) -> None:
        self._client = client
        # Object bodies through the lean aiohttp path when given; else through botocore.
        self._getter = getter
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)

    def _key(self, key: str, *, allow_empty: bool = False) -> str:
        # S3 keys are opaque, but some servers (SeaweedFS's filer) resolve "." and ".."
        # segments, which would reach outside the prefix.
        if not key and not allow_empty:
            raise InvalidKey("empty key")
        parts = key.rstrip("/").split("/") if key else []
        if key.startswith("/") or "\x00" in key or any(p in (".", "..") for p in parts):
            raise InvalidKey(f"bad key {key!r}")
        return self.prefix + key

    async def list(self, prefix: str) -> list[ObjectInfo]:
        full = self._key(prefix, allow_empty=True)
        found: list[ObjectInfo] = []
        if self._getter is not None:
            rows = await self._getter.list(self.bucket, full, what=f"list {prefix!r}")
            found = [
                ObjectInfo(key=key[len(self.prefix) :], size=size, etag=etag, mtime=mtime)
                for key, size, etag, mtime in rows
                if not key.endswith("/")  # "folder" markers made by consoles and tools
            ]
            found.sort(key=lambda info: info.key)
            return found
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "MaxKeys": S3_LIST_PAGE}
        with _translate(f"list {prefix!r}", missing=SourceError):
            while True:
                page = await self._client.list_objects_v2(**params)
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):  # "folder" markers made by consoles and tools
                        continue
                    found.append(
                        ObjectInfo(
                            key=key[len(self.prefix) :],
                            size=obj["Size"],
                            etag=_unquote(obj.get("ETag", "")),
                            mtime=int(obj["LastModified"].timestamp()),
                        )
                    )
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
                params["ContinuationToken"] = token
        found.sort(key=lambda info: info.key)
        return found

    async def stat(self, key: str) -> ObjectInfo:
        full = self._key(key)
        with _translate(f"stat {key!r}", missing=ObjectNotFound):
            head = await self._client.head_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED")
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            etag=_unquote(head.get("ETag", "")),
            mtime=int(head["LastModified"].timestamp()),
            crc32=full_object_crc32(head),
        )

    async def read(self, key: str, *, offset: int = 0, etag: str = "") -> AsyncIterator[bytes]:
        if offset < 0:
            raise ValueError("offset must not be negative")
        what = f"read {key!r}" + (f" from {offset}" if offset else "")
        if self._getter is not None:
            async for chunk in self._getter.get(
                self.bucket, self._key(key), offset=offset, etag=etag, what=what
            ):
                yield chunk
            return
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if offset:
            params["Range"] = f"bytes={offset}-"
        if etag:
            params["IfMatch"] = f'"{etag}"'
        with _translate(what):
            resp = await self._client.get_object(**params)
        body = resp["Body"]
        # Leaving the block releases the connection: back to the pool when the body was
        # read to the end, closed (nothing more downloaded) when the consumer stopped early.
        async with body:
            if offset and not str(resp.get("ContentRange", "")).startswith(f"bytes {offset}-"):
                # A server that ignores Range would hand us the object from byte 0.
                raise SourceError(f"{what}: the server ignored the Range header")
            while True:
                with _translate(what):
                    chunk = await body.read(READ_CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk

    async def check(self) -> None:
        try:
            with _translate(f"bucket {self.bucket!r}", missing=SourceError):
                await self._client.head_bucket(Bucket=self.bucket)
        except SourceError as exc:
            raise DependencyUnavailable(f"S3 source unavailable: {exc.message}") from exc

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to whoever opened it."""
