"""An S3 bucket (AWS, MinIO, SeaweedFS, R2) as the date-partitioned root.

Listings and object bodies go through the lean data plane (`service/s3/getter.py`); a
single object's HEAD (posted keys, with its full-object CRC-32) through aioboto3. botocore
and aiohttp errors become `service.exceptions` here (`_translated`), classified once by
`service/s3/errors.py`, so none escapes to a handler.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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
from service.s3.client import S3
from service.s3.errors import TRANSPORT_ERRORS, S3Error, classify_client_error, describe
from service.sources.base import ObjectInfo, listable


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
    kind = classify_client_error(exc)
    detail = f"{what}: {describe(exc)}"
    if kind is S3Error.NO_BUCKET:
        return SourceError(f"{detail} (check the bucket in ZIPEDGE_SOURCE)")
    if kind is S3Error.NOT_FOUND:
        return missing(f"{what}: not found")
    if kind is S3Error.PRECONDITION_FAILED:
        return ObjectChanged(f"{what}: the object's ETag changed")
    if kind is S3Error.RANGE_NOT_SATISFIABLE:
        return ObjectChanged(f"{what}: the object is shorter than expected")
    if kind is S3Error.DENIED:
        # Misconfiguration: no retry will fix it.
        return SourceError(f"{detail} (S3 denied access: check the credentials, region and bucket policy)")
    if kind is S3Error.RETRYABLE:
        return SourceUnavailable(detail)
    return SourceError(detail)


@contextlib.contextmanager
def _translated(what: str, *, missing: type[SourceError | ObjectNotFound] = ObjectMissing) -> Iterator[None]:
    """Like httpx's map_httpcore_exceptions: botocore/aiohttp errors become ours."""
    try:
        yield
    except ZipedgeError:
        raise
    except ClientError as exc:
        raise _client_error(exc, what, missing) from exc
    except TRANSPORT_ERRORS as exc:
        raise SourceUnavailable(f"{what}: {describe(exc)}") from exc
    except BotoCoreError as exc:  # no credentials, bad parameters: not worth a retry
        raise SourceError(f"{what}: {describe(exc)}") from exc


class S3Source:
    """Objects under `prefix` in `bucket`; keys in and out are relative to the prefix."""

    def __init__(self, s3: S3, *, bucket: str, prefix: str, hidden: str = "") -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        #: keys under this prefix (pending uploads) are not objects of the source
        self.hidden = hidden

    def __repr__(self) -> str:
        return f"S3Source(s3://{self.bucket}/{self.prefix})"

    def _key(self, key: str, *, allow_empty: bool = False) -> str:
        # S3 keys are opaque, but some servers (SeaweedFS's filer) resolve "." and ".."
        # segments, which would reach outside the prefix.
        if not key and not allow_empty:
            raise InvalidKey("empty key")
        parts = key.rstrip("/").split("/") if key else []
        if key.startswith("/") or "\x00" in key or any(p in (".", "..") for p in parts):
            raise InvalidKey(f"bad key {key!r}")
        if self.hidden and key.startswith(self.hidden):
            raise InvalidKey(f"key {key!r} is a pending upload, not an object of the source")
        return self.prefix + key

    async def list(self, prefix: str) -> list[ObjectInfo]:
        full = self._key(prefix, allow_empty=True)
        rows = await self._s3.getter.list(self.bucket, full, what=f"list {prefix!r}")
        start = len(self.prefix)
        found = [
            ObjectInfo(key=key[start:], size=size, etag=etag, mtime=mtime)
            for key, size, etag, mtime in rows
            # "Folder" markers made by consoles and tools, and keys no read would accept.
            if not key.endswith("/") and listable(key[start:], where=f"s3://{self.bucket}/")
        ]
        found.sort(key=lambda info: info.key)
        return found

    async def stat(self, key: str) -> ObjectInfo:
        full = self._key(key)
        with _translated(f"stat {key!r}", missing=ObjectNotFound):
            head = await self._s3.client.head_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED")
        return ObjectInfo(
            key=key,
            size=head["ContentLength"],
            etag=_unquote(head.get("ETag", "")),
            mtime=int(head["LastModified"].timestamp()),
            crc32=full_object_crc32(head),
        )

    def read(
        self, key: str, *, offset: int = 0, etag: str = "", length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The getter's own iterator (no generator in between: one less frame per chunk,
        and closing it releases the connection at once); a bad key raises right here."""
        if offset < 0:
            raise ValueError("offset must not be negative")
        full = self._key(key)
        what = f"read {key!r}" + (f" from {offset}" if offset else "")
        return self._s3.getter.get(self.bucket, full, offset=offset, etag=etag, what=what, length=length)

    async def check(self) -> None:
        try:
            with _translated(f"bucket {self.bucket!r}", missing=SourceError):
                await self._s3.client.head_bucket(Bucket=self.bucket)
        except SourceError as exc:
            raise DependencyUnavailable(f"S3 source unavailable: {exc.message}") from exc

    async def aclose(self) -> None:
        """Nothing to release: the S3 bundle belongs to whoever opened it."""
