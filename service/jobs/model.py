"""What a job looks like from the outside: the same JSON whichever runner runs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    #: waiting for a worker
    QUEUED = "queued"
    #: a worker is building the archive
    RUNNING = "running"
    #: the archive is in the cache: download_url is set
    READY = "ready"
    #: gave up (retries exhausted or an unrecoverable error): error is set
    FAILED = "failed"
    #: cancelled by DELETE /v1/jobs/{id}
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.READY, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class JobView:
    id: str
    status: JobStatus
    filename: str
    bytes_total: int
    entries_total: int
    bytes_done: int = 0
    entries_done: int = 0
    attempts: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    error: str | None = None
    download_url: str | None = None
    #: the archive the job builds, and the set of objects its cache object is keyed by
    #: ("": the job id, as for a job of the anonymous owner)
    archive_id: str = ""
    objects_id: str = ""
    #: who submitted it: the caller's `sub` (who may see it) and `client_id` (whose quota)
    owner: str = ""
    client: str = ""

    @property
    def objects(self) -> str:
        return self.objects_id or self.id

    @property
    def progress(self) -> float:
        if self.status is JobStatus.READY:
            return 1.0
        return round(self.bytes_done / self.bytes_total, 4) if self.bytes_total else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["status"] = self.status.value
        doc["progress"] = self.progress
        for optional in ("error", "download_url"):
            if doc[optional] is None:
                del doc[optional]
        doc["archive_id"] = self.archive_id or self.id
        del (
            doc["client"],
            doc["objects_id"],
        )  # an address, when there is no authentication: not for others' eyes
        if not self.owner:
            del doc["owner"]
        return doc
