"""Finished archives, content-addressed and immutable: `<cache prefix>/<archive id>.zip`.

The truth about "is it cached?" is the object store itself (a HEAD on the key); a short
positive memo sits in front (an archive never stops existing within its lifetime rules),
never a negative one. A new cache object is written as a multipart upload and committed
with `CompleteMultipartUpload(IfNoneMatch="*")` only when exactly the promised number of
bytes went in; any failure aborts the upload, so a partial archive is never visible.
412 means another builder got there first, which is fine: the bytes are the same.

Three implementations: S3 (production), a folder (the embedded default, served by the
service itself at /v1/cache/{id}.zip with Range) and memory (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from aiocache import SimpleMemoryCache
from botocore.exceptions import BotoCoreError, ClientError

from service.archive.names import content_disposition
from service.constants import MiB
from service.exceptions import DependencyUnavailable, ZipedgeError
from service.sigv4 import Credentials, presign_get

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Smallest multipart part (S3 needs 5 MiB; larger parts mean fewer requests).
MIN_PART_BYTES = 8 * MiB
#: S3's limit on the number of parts of one upload.
MAX_PARTS = 10_000
#: Parts uploading at once per cache write: enough to hide one round trip, little memory.
PARTS_IN_FLIGHT = 2
#: How long a positive "it is cached" answer is remembered in process (seconds).
POSITIVE_MEMO_S = 300
#: Cache-Control stored on cache objects: content-addressed, so never stale.
IMMUTABLE = "public, max-age=31536000, immutable"


class CacheWriteFailed(ZipedgeError):
    """A cache object could not be written; the stream it tees from is unaffected."""

    code = "cache_write_failed"


async def _settle(work: Awaitable[T]) -> T:
    """Run `work` to the end even if the caller is cancelled meanwhile (then re-raise the
    cancellation): a half-done abort would leave a temp file or an upload behind."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def part_size_for(total: int) -> int:
    """Parts of at least 8 MiB, large enough that `total` fits in 10,000 of them."""
    needed = math.ceil(total / MAX_PARTS) if total else 0
    return max(MIN_PART_BYTES, math.ceil(needed / MiB) * MiB)


@dataclass(frozen=True, slots=True)
class CachedArchive:
    archive_id: str
    size: int


class CacheWriter(Protocol):
    """Receives one archive's bytes in order; nothing is visible before `commit`."""

    async def write(self, chunk: bytes) -> None: ...

    async def commit(self) -> bool:
        """Publish the object if exactly the promised bytes were written. True if this
        writer published it, False if it already existed. Raises CacheWriteFailed."""
        ...

    async def abort(self) -> None: ...


class ArchiveCache(Protocol):
    async def lookup(self, archive_id: str) -> CachedArchive | None: ...

    async def writer(self, archive_id: str, size: int, filename: str) -> CacheWriter: ...

    def url(self, archive_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        """Where a client downloads the cached archive (stable within a time window), for a
        `GET` or a `HEAD` request."""
        ...

    async def check(self) -> None: ...


class _Memo:
    """Positive lookups, briefly (aiocache's in-process TTL cache)."""

    def __init__(self) -> None:
        # timeout=None: otherwise every lookup of this dict runs in asyncio.wait_for.
        self._cache = SimpleMemoryCache(timeout=None)

    async def get(self, archive_id: str) -> CachedArchive | None:
        found: CachedArchive | None = await self._cache.get(archive_id)
        return found

    async def remember(self, found: CachedArchive) -> None:
        await self._cache.set(found.archive_id, found, ttl=POSITIVE_MEMO_S)


# -- S3 --------------------------------------------------------------------------------------


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        raise CacheWriteFailed(f"{what}: {_error_code(exc) or _status(exc)}") from exc
    except (TimeoutError, BotoCoreError, OSError) as exc:
        raise CacheWriteFailed(f"{what}: {exc}") from exc


class S3CacheWriter:
    def __init__(self, client: Any, *, bucket: str, key: str, size: int, filename: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._size = size
        self._filename = filename
        self._part_size = part_size_for(size)
        self._buffer = bytearray()
        self._written = 0
        self._upload_id = ""
        self._parts: dict[int, str] = {}
        self._next_part = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self._failure: BaseException | None = None
        self._finished = False

    async def start(self) -> None:
        with _s3_errors("create multipart upload"):
            created = await _settle(
                self._client.create_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    ContentType="application/zip",
                    ContentDisposition=content_disposition(self._filename),
                    CacheControl=IMMUTABLE,
                    Metadata={"zipedge-size": str(self._size)},
                )
            )
        self._upload_id = created["UploadId"]

    async def write(self, chunk: bytes) -> None:
        if self._failure is not None:
            raise CacheWriteFailed(f"part upload failed: {self._failure}")
        self._written += len(chunk)
        if self._written > self._size:
            raise CacheWriteFailed(f"more than the promised {self._size} bytes")
        self._buffer += chunk
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            await self._send(part)

    async def _send(self, data: bytes) -> None:
        # Waiting for a free slot is the backpressure: at most PARTS_IN_FLIGHT parts
        # (plus the one being filled) are in memory per cache write.
        await self._slots.acquire()
        self._next_part += 1
        number = self._next_part
        task = asyncio.create_task(self._upload(number, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload(self, number: int, data: bytes) -> None:
        try:
            with _s3_errors(f"upload part {number}"):
                answer = await self._client.upload_part(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
                )
            self._parts[number] = answer["ETag"]
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            self._slots.release()

    async def commit(self) -> bool:
        try:
            if self._written != self._size:
                raise CacheWriteFailed(f"wrote {self._written} bytes, promised {self._size}")
            if self._buffer or self._next_part == 0:
                await self._send(bytes(self._buffer))
                self._buffer.clear()
            await asyncio.gather(*self._tasks)
            if self._failure is not None:
                raise CacheWriteFailed(f"part upload failed: {self._failure}")
            parts = [{"PartNumber": n, "ETag": self._parts[n]} for n in sorted(self._parts)]
            try:
                await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
            except ClientError as exc:
                if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                    # Someone else committed the same (content-addressed) bytes first.
                    await self._abort_upload()
                    self._finished = True
                    return False
                raise CacheWriteFailed(f"complete multipart upload: {_error_code(exc)}") from exc
            except (TimeoutError, BotoCoreError, OSError) as exc:
                raise CacheWriteFailed(f"complete multipart upload: {exc}") from exc
            self._finished = True
            return True
        except BaseException:
            await self.abort()
            raise

    async def _abort_upload(self) -> None:
        if not self._upload_id:
            return
        try:
            await self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            # The bucket's lifecycle rule removes incomplete uploads that we fail to abort.
            logger.warning("could not abort multipart upload of %s: %s", self._key, exc)

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        for task in list(self._tasks):
            task.cancel()
        # Settled: abort runs when a stream is being cancelled and must still reach S3.
        await _settle(self._finish_abort())

    async def _finish_abort(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._buffer.clear()
        await self._abort_upload()


@dataclass
class S3Signing:
    """How redirect URLs are signed: origin endpoint, region, window and validity."""

    origin: str
    region: str
    window_s: int
    min_validity_s: int
    public_url: str
    path_style: bool
    credentials: Credentials | None = None


class S3ArchiveCache:
    def __init__(self, client: Any, *, bucket: str, prefix: str, signing: S3Signing) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._signing = signing
        self._memo = _Memo()

    def key(self, archive_id: str) -> str:
        return f"{self._prefix}{archive_id}.zip"

    async def prepare(self) -> None:
        """Resolve the signing credentials once (explicit keys, or the client's chain)."""
        if self._signing.credentials is not None:
            return
        resolved = await self._client._request_signer._credentials.get_frozen_credentials()
        self._signing.credentials = Credentials(resolved.access_key, resolved.secret_key, resolved.token)

    async def lookup(self, archive_id: str) -> CachedArchive | None:
        found = await self._memo.get(archive_id)
        if found is not None:
            return found
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=self.key(archive_id))
        except ClientError as exc:
            if _status(exc) in (404, 403) or _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise DependencyUnavailable(f"cache lookup: {_error_code(exc)}") from exc
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise DependencyUnavailable(f"cache lookup: {exc}") from exc
        found = CachedArchive(archive_id, int(head["ContentLength"]))
        await self._memo.remember(found)
        return found

    async def writer(self, archive_id: str, size: int, filename: str) -> CacheWriter:
        writer = S3CacheWriter(
            self._client, bucket=self._bucket, key=self.key(archive_id), size=size, filename=filename
        )
        await writer.start()
        return writer

    def url(self, archive_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        signing = self._signing
        assert signing.credentials is not None, "prepare() first"
        # Through the edge (a public URL) HEAD is fetched upstream as a GET
        # (proxy_cache_convert_head), so one GET URL serves both; straight to S3 a HEAD
        # needs a URL signed for HEAD.
        signed_method = "HEAD" if method == "HEAD" and not signing.public_url else "GET"
        return presign_get(
            origin=signing.origin,
            bucket=self._bucket,
            key=self.key(archive_id),
            credentials=signing.credentials,
            region=signing.region,
            window_s=signing.window_s,
            min_validity_s=signing.min_validity_s,
            public_url=signing.public_url,
            path_style=signing.path_style,
            response_headers={"response-content-disposition": content_disposition(filename)},
            method=signed_method,
        )

    async def check(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self._bucket)
        except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
            raise DependencyUnavailable(f"cache bucket {self._bucket}: {exc}") from exc


# -- folder ----------------------------------------------------------------------------------

#: Bytes gathered before one write to disk (one thread hop per write).
_FOLDER_WRITE_BYTES = 4 * MiB


class FolderCacheWriter:
    def __init__(self, directory: Path, archive_id: str, size: int) -> None:
        self._directory = directory
        self._final = directory / f"{archive_id}.zip"
        self._size = size
        self._written = 0
        self._buffer = bytearray()
        self._handle: Any = None
        self._tmp = ""
        self._done = False

    async def start(self) -> None:
        def open_tmp() -> tuple[Any, str]:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._directory, prefix=".partial-", suffix=".zip")
            return os.fdopen(fd, "wb"), tmp

        opening = asyncio.ensure_future(asyncio.to_thread(open_tmp))
        try:
            self._handle, self._tmp = await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                handle, tmp = opening.result()
                handle.close()
                os.unlink(tmp)
            raise

    async def write(self, chunk: bytes) -> None:
        self._written += len(chunk)
        if self._written > self._size:
            raise CacheWriteFailed(f"more than the promised {self._size} bytes")
        self._buffer += chunk
        if len(self._buffer) >= _FOLDER_WRITE_BYTES:
            data = bytes(self._buffer)
            self._buffer.clear()
            await asyncio.to_thread(self._handle.write, data)

    async def commit(self) -> bool:
        try:
            if self._written != self._size:
                raise CacheWriteFailed(f"wrote {self._written} bytes, promised {self._size}")

            def publish() -> bool:
                self._handle.write(self._buffer)
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._handle.close()
                try:
                    os.link(self._tmp, self._final)  # fails if it exists: first writer wins
                    return True
                except FileExistsError:
                    return False
                finally:
                    os.unlink(self._tmp)

            published = await asyncio.to_thread(publish)
            self._done = True
            return published
        except OSError as exc:
            await self.abort()
            raise CacheWriteFailed(f"cache folder: {exc}") from exc
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True

        def discard() -> None:
            with contextlib.suppress(OSError):
                self._handle.close()
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)

        await _settle(asyncio.to_thread(discard))


class FolderArchiveCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, archive_id: str) -> Path:
        return self.directory / f"{archive_id}.zip"

    async def lookup(self, archive_id: str) -> CachedArchive | None:
        try:
            st = await asyncio.to_thread(self.path(archive_id).stat)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DependencyUnavailable(f"cache folder: {exc.strerror}") from exc
        return CachedArchive(archive_id, st.st_size)

    async def writer(self, archive_id: str, size: int, filename: str) -> CacheWriter:
        writer = FolderCacheWriter(self.directory, archive_id, size)
        try:
            await writer.start()
        except OSError as exc:
            raise CacheWriteFailed(f"cache folder: {exc.strerror}") from exc
        return writer

    def url(self, archive_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        return f"{base_url.rstrip('/')}/v1/cache/{archive_id}.zip?filename={quote(filename)}"

    async def check(self) -> None:
        def writable() -> bool:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.access(self.directory, os.W_OK)

        try:
            ok = await asyncio.to_thread(writable)
        except OSError as exc:
            raise DependencyUnavailable(f"cache folder: {exc.strerror}") from exc
        if not ok:
            raise DependencyUnavailable(f"cache folder {self.directory} is not writable")


# -- memory ----------------------------------------------------------------------------------


@dataclass
class MemoryCacheWriter:
    cache: MemoryArchiveCache
    archive_id: str
    size: int
    data: bytearray = field(default_factory=bytearray)
    aborted: bool = False

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def commit(self) -> bool:
        if len(self.data) != self.size:
            self.aborted = True
            raise CacheWriteFailed(f"wrote {len(self.data)} bytes, promised {self.size}")
        if self.archive_id in self.cache.objects:
            return False
        self.cache.objects[self.archive_id] = bytes(self.data)
        return True

    async def abort(self) -> None:
        self.aborted = True


@dataclass
class MemoryArchiveCache:
    objects: dict[str, bytes] = field(default_factory=dict)
    writers: list[MemoryCacheWriter] = field(default_factory=list)

    async def lookup(self, archive_id: str) -> CachedArchive | None:
        data = self.objects.get(archive_id)
        return None if data is None else CachedArchive(archive_id, len(data))

    async def writer(self, archive_id: str, size: int, filename: str) -> CacheWriter:
        writer = MemoryCacheWriter(self, archive_id, size)
        self.writers.append(writer)
        return writer

    def url(self, archive_id: str, filename: str, *, base_url: str, method: str = "GET") -> str:
        return f"memory://{archive_id}.zip"

    async def check(self) -> None:
        return None
