"""The use case: photos come in through uploads.

`create` checks what a client announces (`upload_request.py`), keeps a pending record and
hands out where to PUT the body: a presigned URL of the staging bucket (the service never
carries the bytes) or, with folder storage, the service's own signed `…/body` URL.
`complete` verifies what storage holds against the announcement (size, type, CRC-32),
files it under its day without ever overwriting (a clash gets a suffix derived from the
upload id), records its CRC in the object index, invalidates its day's listing in every
process, and only then forgets the staged body: a complete that dies half-way is simply
repeated, and finds its own copy. `sweep` (the janitor) removes abandoned uploads.

No Starlette here; `service/web/uploads.py` translates.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.constants import (
    JANITOR_BATCH,
    UPLOAD_COMPLETE_LEASE_S,
    UPLOAD_COMPLETE_POLL_S,
    UPLOAD_COMPLETE_WAIT_S,
    UPLOAD_ID_BYTES,
)
from service.exceptions import (
    BadUploadLink,
    DependencyUnavailable,
    UnknownUpload,
    UploadExists,
    UploadIncomplete,
    UploadMismatch,
    ZipedgeError,
)
from service.identity import Caller
from service.index import Known, ObjectIndex
from service.listing import Listings, day_of_key
from service.pending import PendingStore, PendingUpload, UploadState
from service.runtime import Runtime
from service.settings import Settings
from service.sigv4 import crc32_header
from service.staging import Placed, Staging
from service.upload_request import UploadRequest, parse_upload_request, signature_valid, suffixed

logger = logging.getLogger(__name__)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_upload_id(value: str) -> bool:
    return len(value) == 2 * UPLOAD_ID_BYTES and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True, slots=True)
class Ticket:
    """Where and how to PUT one upload's body."""

    record: PendingUpload
    url: str
    headers: dict[str, str]


class Uploads:
    def __init__(
        self,
        *,
        settings: Settings,
        source_id: str,
        staging: Staging,
        pending: PendingStore,
        index: ObjectIndex,
        listings: Listings,
        link_key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.source_id = source_id
        self.staging = staging
        self.pending = pending
        self.index = index
        self.listings = listings
        self._link_key = link_key
        self._clock = clock

    # --- signing ---------------------------------------------------------------------------

    async def create(self, caller: Caller, body: Any, *, body_url: Callable[[str, int], str]) -> Ticket:
        """A pending record and its upload URL. `body_url(id, expires)` is the service's
        own signed body URL, used when staging is a folder."""
        settings, now = self.settings, self._clock()
        request = parse_upload_request(
            body, types=settings.upload_types, max_bytes=settings.upload_max_bytes, now=now
        )
        upload_id = secrets.token_hex(UPLOAD_ID_BYTES)
        expires = int(now) + settings.upload_ttl_s
        record = PendingUpload(
            id=upload_id,
            owner=caller.sub,
            staging_key=upload_id,
            filename=request.filename,
            content_type=request.content_type,
            size=request.size,
            crc32=request.crc32,
            taken_at=request.taken_at,
            created_at=now,
            expires_at=float(expires),
        )
        put = await self.staging.presign(
            upload_id,
            size=request.size,
            content_type=request.content_type,
            crc32=request.crc32,
            expires_s=settings.upload_ttl_s,
            body_url=body_url(upload_id, expires),
        )
        await self.pending.put(record)
        return Ticket(record, put.url, put.headers)

    # --- reading -----------------------------------------------------------------------------

    async def get(self, caller: Caller, upload_id: str) -> PendingUpload:
        """The caller's upload; `UnknownUpload` for anyone else's (admins see all)."""
        record = await self.pending.get(upload_id) if is_upload_id(upload_id) else None
        if record is None or not caller.owns(record.owner):
            raise UnknownUpload(f"no upload {upload_id!r}")
        return record

    # --- the body, when the service receives it ----------------------------------------------

    async def receive(
        self,
        upload_id: str,
        *,
        expires: str,
        sig: str,
        headers: dict[str, str],
        body: AsyncIterator[bytes],
    ) -> int:
        """`PUT …/body`: the signed URL is the credential. Headers must be those handed out;
        size and CRC are checked while writing. The body's CRC-32."""
        if not is_upload_id(upload_id) or not signature_valid(
            self._link_key, upload_id, expires, sig, self._clock()
        ):
            raise BadUploadLink("this upload URL is not valid (tampered with or expired)")
        record = await self.pending.get(upload_id)
        if record is None:
            raise UnknownUpload(f"no upload {upload_id!r}")
        if record.state is not UploadState.PENDING:
            raise UploadExists("this upload is already completed")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != record.content_type:
            raise UploadMismatch(f"Content-Type is {kind!r}, not the {record.content_type!r} announced")
        length = headers.get("content-length")
        if length is not None and length != str(record.size):
            raise UploadMismatch(f"Content-Length is {length}, not the {record.size} bytes announced")
        declared = headers.get("x-amz-checksum-crc32")
        if record.crc32 is not None and declared is not None:
            if declared != crc32_header(record.crc32):
                raise UploadMismatch("x-amz-checksum-crc32 is not the CRC-32 announced")
        return await self.staging.receive(record.staging_key, body, size=record.size, crc32=record.crc32)

    # --- completing ----------------------------------------------------------------------------

    async def complete(self, caller: Caller, upload_id: str) -> PendingUpload:
        """File the upload under its day; the same answer however often it is repeated,
        and one final object however many completes race."""
        deadline = time.monotonic() + UPLOAD_COMPLETE_WAIT_S
        while True:
            record = await self._current(caller, upload_id)
            if record.state is not UploadState.PENDING:
                return record
            if await self.pending.lease(upload_id, UPLOAD_COMPLETE_LEASE_S):
                break
            if time.monotonic() >= deadline:
                raise DependencyUnavailable("another complete of this upload is still running")
            await asyncio.sleep(UPLOAD_COMPLETE_POLL_S)  # another complete holds it: its answer
        try:
            record = await self._current(caller, upload_id)  # it may have finished meanwhile
            if record.state is not UploadState.PENDING:
                return record
            return await self._complete(record)
        finally:
            try:
                await self.pending.release(upload_id)
            except DependencyUnavailable as exc:  # it expires by itself
                logger.warning("could not release upload %s: %s", upload_id, exc.message)

    async def _current(self, caller: Caller, upload_id: str) -> PendingUpload:
        record = await self.get(caller, upload_id)
        if record.state is UploadState.FAILED:
            raise UploadMismatch(record.error or "the uploaded body did not match")
        if (
            record.state is UploadState.PENDING
            and record.created_at < self._clock() - self.settings.upload_grace_s
        ):
            raise UnknownUpload(f"upload {upload_id!r} was abandoned")
        return record

    async def _complete(self, record: PendingUpload) -> PendingUpload:
        staged = await self.staging.head(record.staging_key)
        if staged is None:
            # (The staged body is removed only after the record says completed, so a
            # pending record without one was never uploaded.)
            raise UploadIncomplete("nothing has been uploaded for this upload yet: PUT the body first")
        problem = ""
        if staged.size != record.size:
            problem = f"the stored body has {staged.size} bytes, not the {record.size} announced"
        elif staged.content_type and staged.content_type.lower() != record.content_type:
            problem = f"the stored body is {staged.content_type!r}, not {record.content_type!r}"
        crc = staged.crc32
        if not problem and (crc is None or record.crc32 is None):
            # Storage keeps no CRC of it, or none was declared: read it once.
            crc = await self.staging.checksum(record.staging_key) if crc is None else crc
        if not problem and record.crc32 is not None and crc != record.crc32:
            problem = f"the stored body's CRC-32 is {crc:08x}, not the {record.crc32:08x} announced"
        if problem:
            await self.staging.delete(record.staging_key)
            await self.pending.put(record.with_state(UploadState.FAILED, error=problem))
            raise UploadMismatch(problem)
        assert crc is not None
        placed = await self._place(record, crc)
        if placed is None:
            raise UploadExists("every name this upload could take is used by another photo")
        done = await self._finish(record, placed, crc)
        try:
            await self.staging.delete(record.staging_key)
        except ZipedgeError as exc:  # the janitor removes it with the record
            logger.warning("could not remove the staged body of %s: %s", record.id, exc.message)
        return done

    async def _place(self, record: PendingUpload, crc: int) -> Placed | None:
        """The first of its names that is free (or already this upload's own)."""
        request = UploadRequest(record.filename, record.content_type, record.size, crc, record.taken_at)
        for name in (
            record.filename,
            suffixed(record.filename, record.id, 8),
            suffixed(record.filename, record.id, 32),
        ):
            placed = await self.staging.place(
                record.staging_key,
                request.final_key(name),
                upload_id=record.id,
                content_type=record.content_type,
                size=record.size,
                taken_at=record.taken_at,
            )
            if placed is not None:
                return placed
        return None

    async def _finish(self, record: PendingUpload, placed: Placed, crc: int) -> PendingUpload:
        await self.index.record(self.source_id, [Known(placed.key, placed.etag, crc)])
        day = day_of_key(placed.key)
        if day is not None:
            await self.listings.bump(day)  # after the object is visible at its final key
        result = {
            "key": placed.key,
            "etag": placed.etag,
            "size": placed.size,
            "crc32": crc,
            "mtime": placed.mtime,
        }
        done = record.with_state(UploadState.COMPLETED, result=result)
        await self.pending.put(done)
        return done

    # --- abandoning -------------------------------------------------------------------------

    async def abandon(self, caller: Caller, upload_id: str) -> None:
        """`DELETE`: the staged body and the record go; a completed photo stays filed."""
        record = await self.get(caller, upload_id)
        await self.staging.delete(record.staging_key)
        await self.pending.delete(record.id)

    async def sweep(self, now: float | None = None) -> list[str]:
        """Remove uploads older than the grace period (body and record), each claimed
        atomically first, so any number of janitors may run at once. What it did, a line
        per upload."""
        cutoff = (self._clock() if now is None else now) - self.settings.upload_grace_s
        done: list[str] = []
        while True:
            claimed = await self.pending.claim(cutoff, JANITOR_BATCH)
            for record in claimed:
                if record.state is not UploadState.COMPLETED:
                    await self.staging.delete(record.staging_key)
                await self.pending.delete(record.id)
                what = "abandoned" if record.state is UploadState.PENDING else record.state.value
                done.append(
                    f"removed {what} upload {record.id} ({record.filename}, {record.size} bytes, "
                    f"created {_iso(record.created_at)})"
                )
            if len(claimed) < JANITOR_BATCH:
                return done


def view(record: PendingUpload) -> dict[str, Any]:
    """The JSON of an upload."""
    doc: dict[str, Any] = {
        "id": record.id,
        "status": record.state.value,
        "filename": record.filename,
        "content_type": record.content_type,
        "size": record.size,
        "crc32": record.crc32,
        "taken_at": _iso(record.taken_at),
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
    }
    request = UploadRequest(record.filename, record.content_type, record.size, record.crc32, record.taken_at)
    doc["key"] = request.final_key()
    if record.result is not None:
        doc.update(key=record.result["key"], etag=record.result["etag"], crc32=record.result["crc32"])
    if record.error:
        doc["error"] = record.error
    return doc


def uploads_of(runtime: Runtime) -> Uploads:
    """The upload use case over the runtime's staging, records, index and listings."""
    assert runtime.staging is not None
    return Uploads(
        settings=runtime.settings,
        source_id=runtime.source_id,
        staging=runtime.staging,
        pending=runtime.pending,
        index=runtime.index,
        listings=runtime.listings,
        link_key=runtime.link_key,
    )
