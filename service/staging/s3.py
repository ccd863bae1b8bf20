"""Staging in an S3 bucket: clients PUT straight to storage, the service never carries
a body.

The presigned PUT binds Content-Length, Content-Type, x-amz-checksum-crc32 (when declared)
and `If-None-Match: *` (service/sigv4.py). Completion reads the staged object's HEAD with
checksum mode enabled and files it with a server-side `CopyObject(IfNoneMatch="*")`, which
never overwrites: of two copies to one key exactly one succeeds, the other gets 412. The
copy carries `x-amz-meta-zipedge-upload`, so a repeated complete recognises its own copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from service.exceptions import (
    BadUploadLink,
    DependencyUnavailable,
    SourceError,
    SourceUnavailable,
    ZipedgeError,
)
from service.s3.client import S3
from service.s3.errors import TRANSPORT_ERRORS, S3Error, classify_client_error, describe
from service.sigv4 import PresignedPut, presign_put
from service.sources.s3 import full_object_crc32
from service.staging.base import UPLOAD_MARKER, Placed, Staged, crc32


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except ZipedgeError:
        raise
    except ClientError as exc:
        if classify_client_error(exc) is S3Error.RETRYABLE:
            raise SourceUnavailable(f"{what}: {describe(exc)}") from exc
        raise SourceError(f"{what}: {describe(exc)}") from exc
    except (*TRANSPORT_ERRORS, BotoCoreError) as exc:
        raise SourceUnavailable(f"{what}: {describe(exc)}") from exc


def _missing(exc: ClientError) -> bool:
    return classify_client_error(exc) is S3Error.NOT_FOUND


class S3Staging:
    def __init__(
        self,
        s3: S3,
        *,
        bucket: str,
        prefix: str,
        source_bucket: str,
        source_prefix: str,
        upload_endpoint: str = "",
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.source_bucket = source_bucket
        self.source_prefix = source_prefix
        endpoint = upload_endpoint or s3.config.endpoint_url or ""
        # Path-style for any named endpoint (SeaweedFS, MinIO); AWS's virtual-hosted form.
        self._origin = endpoint or f"https://s3.{s3.config.signing_region}.amazonaws.com"
        self._path_style = bool(endpoint)

    async def presign(
        self, key: str, *, size: int, content_type: str, crc32: int | None, expires_s: int, body_url: str
    ) -> PresignedPut:
        return presign_put(
            origin=self._origin,
            bucket=self.bucket,
            key=self.prefix + key,
            credentials=await self._s3.credentials.current(),
            region=self._s3.config.signing_region,
            expires_s=expires_s,
            size=size,
            content_type=content_type,
            crc32=crc32,
            path_style=self._path_style,
        )

    async def receive(self, key: str, body: AsyncIterator[bytes], *, size: int, crc32: int | None) -> int:
        # Never handed out a body URL for this staging, so no signature admits one here.
        raise BadUploadLink("uploads go straight to storage: PUT to the URL the upload was given")

    async def head(self, key: str) -> Staged | None:
        try:
            with _translated(f"head staged {key!r}"):
                head = await self._s3.client.head_object(
                    Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
                )
        except SourceError as exc:
            if isinstance(exc.__cause__, ClientError) and _missing(exc.__cause__):
                return None
            raise
        return Staged(
            size=int(head["ContentLength"]),
            content_type=str(head.get("ContentType", "")),
            crc32=full_object_crc32(head),
        )

    async def checksum(self, key: str) -> int:
        crc = 0
        async for chunk in self._s3.getter.get(
            self.bucket, self.prefix + key, offset=0, etag="", what=f"read staged {key!r}"
        ):
            crc = crc32(chunk, crc)
        return crc & 0xFFFFFFFF

    async def place(
        self, key: str, final_key: str, *, upload_id: str, content_type: str, size: int, taken_at: float
    ) -> Placed | None:
        target = self.source_prefix + final_key
        taken = datetime.fromtimestamp(taken_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            with _translated(f"file {final_key!r}"):
                copied = await self._s3.client.copy_object(
                    Bucket=self.source_bucket,
                    Key=target,
                    CopySource={"Bucket": self.bucket, "Key": self.prefix + key},
                    IfNoneMatch="*",
                    MetadataDirective="REPLACE",
                    ContentType=content_type,
                    Metadata={UPLOAD_MARKER: upload_id, "zipedge-taken-at": taken},
                )
        except SourceError as exc:
            cause = exc.__cause__
            if not (
                isinstance(cause, ClientError) and classify_client_error(cause) is S3Error.PRECONDITION_FAILED
            ):
                raise
            return await self._ours(final_key, upload_id)  # the key is taken: by whom?
        result = copied["CopyObjectResult"]
        return Placed(
            key=final_key,
            etag=str(result.get("ETag", "")).strip('"'),
            size=size,
            mtime=int(result["LastModified"].timestamp()),
        )

    async def _ours(self, final_key: str, upload_id: str) -> Placed | None:
        with _translated(f"head {final_key!r}"):
            head = await self._s3.client.head_object(
                Bucket=self.source_bucket, Key=self.source_prefix + final_key
            )
        if head.get("Metadata", {}).get(UPLOAD_MARKER) != upload_id:
            return None
        return Placed(
            key=final_key,
            etag=str(head.get("ETag", "")).strip('"'),
            size=int(head["ContentLength"]),
            mtime=int(head["LastModified"].timestamp()),
        )

    async def delete(self, key: str) -> None:
        with _translated(f"delete staged {key!r}"):
            await self._s3.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    async def check(self) -> None:
        try:
            with _translated(f"bucket {self.bucket!r}"):
                await self._s3.client.head_bucket(Bucket=self.bucket)
        except SourceError as exc:
            raise DependencyUnavailable(f"upload staging unavailable: {exc.message}") from exc
