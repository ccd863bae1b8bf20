"""Cache objects in S3: multipart uploads committed with `IfNoneMatch="*"`, stable presigned
redirect URLs.

A new object is a multipart upload committed with `CompleteMultipartUpload(IfNoneMatch="*")`
only when exactly the promised number of bytes went in; 412 means another builder got there
first, which is fine (the bytes are the same). Any failure aborts the upload; an abort that
fails is retried with backoff, and the bucket's lifecycle rule (and `zipedge janitor`) remove
what still remains.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from service.archive.names import content_disposition
from service.cache.base import CachedArchive, CacheEntry, CacheWriter, PositiveMemo, settle
from service.constants import (
    ABORT_ATTEMPTS,
    ABORT_BACKOFF_S,
    CACHE_MAX_PARTS,
    CACHE_MIN_PART_BYTES,
    CACHE_PARTS_IN_FLIGHT,
    IMMUTABLE_CACHE_CONTROL,
    MiB,
)
from service.exceptions import CacheMisconfigured, CacheWriteFailed, DependencyUnavailable
from service.s3.client import S3
from service.s3.errors import TRANSPORT_ERRORS, S3Error, classify_client_error, describe
from service.sigv4 import presign_get

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger(__name__)

#: User metadata on every cache object (`x-amz-meta-<name>`): the edge answers with them.
META_ARCHIVE_ID = "zipedge-archive-id"
META_LAST_MODIFIED = "zipedge-last-modified"
META_SIZE = "zipedge-size"


def part_size_for(total: int) -> int:
    """Parts of at least CACHE_MIN_PART_BYTES, large enough that `total` fits in the
    10,000 parts S3 allows."""
    needed = math.ceil(total / CACHE_MAX_PARTS) if total else 0
    return max(CACHE_MIN_PART_BYTES, math.ceil(needed / MiB) * MiB)


def _failed(what: str, exc: BaseException) -> CacheWriteFailed:
    return CacheWriteFailed(f"{what}: {describe(exc)}")


class S3CacheWriter:
    def __init__(
        self,
        s3: S3,
        *,
        bucket: str,
        key: str,
        entry: CacheEntry,
        parts_in_flight: int = CACHE_PARTS_IN_FLIGHT,
    ) -> None:
        self._client = s3.client
        self._bucket = bucket
        self._key = key
        self._entry = entry
        self._size = entry.size
        self._part_size = part_size_for(entry.size)
        #: the chunks of the part being filled, and their bytes: joined once, when full
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._written = 0
        self._upload_id = ""
        self._parts: dict[int, str] = {}
        self._next_part = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(parts_in_flight)
        self._failure: BaseException | None = None
        self._finished = False

    async def start(self) -> None:
        entry = self._entry
        creating = asyncio.ensure_future(
            self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                ContentType="application/zip",
                ContentDisposition=content_disposition(entry.filename),
                CacheControl=IMMUTABLE_CACHE_CONTROL,
                Metadata={
                    META_SIZE: str(entry.size),
                    META_ARCHIVE_ID: entry.archive_id,
                    META_LAST_MODIFIED: formatdate(entry.last_modified, usegmt=True),
                },
            )
        )
        try:
            created = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Cancelled while S3 was creating it: an upload nobody holds would be left.
            await asyncio.wait([creating])
            if not creating.cancelled() and creating.exception() is None:
                self._upload_id = creating.result()["UploadId"]
                await settle(self._abort_upload())
            raise
        except (ClientError, BotoCoreError, *TRANSPORT_ERRORS) as exc:
            raise _failed("create multipart upload", exc) from exc
        self._upload_id = created["UploadId"]

    async def write(self, chunk: bytes) -> None:
        if self._failure is not None:
            raise CacheWriteFailed(f"part upload failed: {self._failure}")
        self._written += len(chunk)
        if self._written > self._size:
            raise CacheWriteFailed(f"more than the promised {self._size} bytes")
        # Chunks are at most a read's size (256 KiB): only the one that crosses a part's
        # boundary is split, and each part's bytes are copied once, when it is joined.
        while chunk:
            room = self._part_size - self._pending_bytes
            head, chunk = (chunk, b"") if len(chunk) <= room else (chunk[:room], chunk[room:])
            self._pending.append(head)
            self._pending_bytes += len(head)
            if self._pending_bytes == self._part_size:
                await self._send(self._take())

    def _take(self) -> bytes:
        part = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        return part

    async def _send(self, data: bytes) -> None:
        # Waiting for a free slot is the backpressure: at most `parts_in_flight` parts
        # (plus the one being filled) are in memory per cache write.
        await self._slots.acquire()
        self._next_part += 1
        number = self._next_part
        task = asyncio.create_task(self._upload(number, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload(self, number: int, data: bytes) -> None:
        try:
            answer = await self._client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
            )
            self._parts[number] = answer["ETag"]
        except (ClientError, BotoCoreError, *TRANSPORT_ERRORS) as exc:
            self._failure = _failed(f"upload part {number}", exc)
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._slots.release()

    async def commit(self) -> bool:
        try:
            if self._written != self._size:
                raise CacheWriteFailed(f"wrote {self._written} bytes, promised {self._size}")
            if self._pending or self._next_part == 0:
                await self._send(self._take())
            await asyncio.gather(*self._tasks)
            if self._failure is not None:
                raise CacheWriteFailed(f"part upload failed: {self._failure}")
            parts: list[CompletedPartTypeDef] = [
                {"PartNumber": n, "ETag": self._parts[n]} for n in sorted(self._parts)
            ]
            try:
                await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if classify_client_error(exc) is S3Error.PRECONDITION_FAILED:
                    # Someone else committed the same (content-addressed) bytes first.
                    await self._abort_upload()
                    self._finished = True
                    return False
                raise _failed("complete multipart upload", exc) from exc
            except (BotoCoreError, *TRANSPORT_ERRORS) as exc:
                raise _failed("complete multipart upload", exc) from exc
            self._finished = True
            return True
        except BaseException:
            await self.abort()
            raise

    async def _abort_upload(self) -> None:
        if not self._upload_id:
            return
        for attempt in range(1, ABORT_ATTEMPTS + 1):
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )
                return
            except ClientError as exc:
                if classify_client_error(exc) is S3Error.NOT_FOUND:
                    return  # gone already (aborted or completed elsewhere)
                failure: BaseException = exc
            except (BotoCoreError, *TRANSPORT_ERRORS) as exc:
                failure = exc
            if attempt < ABORT_ATTEMPTS:
                await asyncio.sleep(ABORT_BACKOFF_S * 2 ** (attempt - 1))
        # `zipedge janitor` and the bucket's lifecycle rule remove incomplete uploads.
        logger.warning("could not abort multipart upload of %s: %s", self._key, describe(failure))

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        for task in list(self._tasks):
            task.cancel()
        # Settled: abort runs when a stream is being cancelled and must still reach S3.
        await settle(self._finish_abort())

    async def _finish_abort(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pending, self._pending_bytes = [], 0
        await self._abort_upload()


@dataclass(frozen=True, slots=True)
class RedirectSigning:
    """How redirect URLs are signed: the window their signing time is floored to, how long
    they stay valid after it, and the public base (the edge) they point at."""

    window_s: int
    min_validity_s: int
    public_url: str


class S3ArchiveCache:
    def __init__(self, s3: S3, *, bucket: str, prefix: str, signing: RedirectSigning) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._signing = signing
        self._memo = PositiveMemo()

    def key(self, objects_id: str) -> str:
        return f"{self._prefix}{objects_id}.zip"

    async def lookup(self, objects_id: str) -> CachedArchive | None:
        found = await self._memo.get(objects_id)
        if found is not None:
            return found
        try:
            head = await self._s3.client.head_object(Bucket=self._bucket, Key=self.key(objects_id))
        except ClientError as exc:
            kind = classify_client_error(exc)
            if kind is S3Error.NOT_FOUND:
                return None
            if kind is S3Error.DENIED:
                raise CacheMisconfigured(
                    f"cache bucket {self._bucket!r} refused a HEAD: {describe(exc)}"
                ) from exc
            raise DependencyUnavailable(f"cache lookup: {describe(exc)}") from exc
        except (BotoCoreError, *TRANSPORT_ERRORS) as exc:
            raise DependencyUnavailable(f"cache lookup: {describe(exc)}") from exc
        layout = str(head.get("Metadata", {}).get(META_ARCHIVE_ID, "")) or objects_id
        found = CachedArchive(objects_id, layout, int(head["ContentLength"]))
        await self._memo.remember(found)
        return found

    async def writer(self, entry: CacheEntry, *, parts_in_flight: int = CACHE_PARTS_IN_FLIGHT) -> CacheWriter:
        writer = S3CacheWriter(
            self._s3,
            bucket=self._bucket,
            key=self.key(entry.objects_id),
            entry=entry,
            parts_in_flight=parts_in_flight,
        )
        await writer.start()
        return writer

    async def url(self, objects_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        signing = self._signing
        config = self._s3.config
        # Through the edge (a public URL) HEAD is fetched upstream as a GET
        # (proxy_cache_convert_head), so one GET URL serves both; straight to S3 a HEAD
        # needs a URL signed for HEAD.
        signed_method = "HEAD" if method == "HEAD" and not signing.public_url else "GET"
        return presign_get(
            origin=config.origin,
            bucket=self._bucket,
            key=self.key(objects_id),
            credentials=await self._s3.credentials.current(),
            region=config.signing_region,
            window_s=signing.window_s,
            min_validity_s=signing.min_validity_s,
            public_url=signing.public_url,
            path_style=config.path_style,
            response_headers={"response-content-disposition": content_disposition(filename)},
            method=signed_method,
        )

    async def served_file(self, objects_id: str) -> tuple[Path, CachedArchive] | None:
        return None  # S3 (or the edge in front of it) serves cache objects

    async def check(self) -> None:
        try:
            await self._s3.client.head_bucket(Bucket=self._bucket)
        except (ClientError, BotoCoreError, *TRANSPORT_ERRORS) as exc:
            raise DependencyUnavailable(f"cache bucket {self._bucket}: {describe(exc)}") from exc
