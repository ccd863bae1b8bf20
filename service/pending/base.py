"""A pending upload's record, and what a store of them offers.

A store keeps records by id and by age. Two operations are atomic across every process
sharing the store: `lease` (one complete at a time per upload) and `claim` (each old
record goes to exactly one janitor, however many run at once).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol


class UploadState(enum.Enum):
    PENDING = "pending"  #: signed; the body may or may not have arrived
    COMPLETED = "completed"  #: filed under its day; `result` says where
    FAILED = "failed"  #: the body did not match; `error` says why


@dataclass(frozen=True, slots=True)
class PendingUpload:
    id: str
    owner: str  #: the caller's `sub` ("" without authentication)
    staging_key: str  #: relative to the staging location
    filename: str  #: the file name under its day, after the name policy
    content_type: str
    size: int
    crc32: int | None  #: as declared; None: computed at completion
    taken_at: float  #: seconds since the epoch: the day it is filed under
    created_at: float
    expires_at: float  #: the upload URL's end of validity
    state: UploadState = UploadState.PENDING
    #: once completed: {"key", "etag", "size", "crc32", "mtime"}
    result: dict[str, Any] | None = None
    error: str | None = None

    def with_state(self, state: UploadState, **changes: Any) -> PendingUpload:
        return replace(self, state=state, **changes)

    def to_json(self) -> str:
        doc = asdict(self)
        doc["state"] = self.state.value
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> PendingUpload:
        doc = json.loads(text)
        doc["state"] = UploadState(doc["state"])
        return cls(**doc)


class PendingStore(Protocol):
    async def put(self, record: PendingUpload) -> None:
        """Store or replace `record` (its age index entry is set once, at creation)."""
        ...

    async def get(self, upload_id: str) -> PendingUpload | None: ...

    async def delete(self, upload_id: str) -> None:
        """Forget the record (and its lease and age index entry); fine if absent."""
        ...

    async def lease(self, upload_id: str, ttl_s: float) -> bool:
        """Take the upload for `ttl_s` seconds: True for exactly one caller at a time."""
        ...

    async def release(self, upload_id: str) -> None: ...

    async def claim(self, older_than: float, limit: int) -> Sequence[PendingUpload]:
        """Up to `limit` records created before `older_than` (epoch seconds), each taken
        out of the age index for this caller alone: a record returned here is returned to
        no other caller. The caller then deletes what it claimed."""
        ...

    async def check(self) -> None:
        """`DependencyUnavailable` when the store cannot be reached (for /readyz)."""
        ...

    async def aclose(self) -> None: ...
