"""The job engine's small interface.

`JobQueue` is all the web layer knows: submit a manifest (idempotent: the job id is made of
the archive id and the owner, so one client's concurrent requests for one archive share one
job, and another client's request is a job of its own that waits for the same build), read
a job, cancel it, list recent ones. Each job records its owner (the caller's `sub`, whom
the web layer lets see it) and its client (`client_id`, whose unfinished jobs are counted
against `ZIPEDGE_MAX_JOBS_PER_CLIENT`). `service.jobs.saq_queue` implements it on saq + Redis for any
number of worker processes; `service.jobs.local` runs jobs as tasks of the service itself.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from service.archive.manifest import Manifest
from service.constants import ARCHIVE_ID_HEX_CHARS, JOB_RETRY_MAX_DELAY_S, RETRY_AFTER_BUSY_S
from service.exceptions import RateLimited
from service.identity import UNAUTHENTICATED, Caller
from service.jobs.model import JobView


def job_id_for(archive_id: str, owner: str) -> str:
    """The job of `owner` for an archive: the archive id itself for the anonymous owner
    (no authentication), else a hash of both, as long and as unguessable as an archive id."""
    if not owner:
        return archive_id
    return hashlib.sha256(f"{owner}\n{archive_id}".encode()).hexdigest()[:ARCHIVE_ID_HEX_CHARS]


def too_many_jobs(limit: int) -> RateLimited:
    return RateLimited(
        f"at most {limit} unfinished jobs per client: wait for one to finish, or cancel one",
        retry_after=RETRY_AFTER_BUSY_S,
    )


class JobQueue(Protocol):
    async def submit(self, manifest: Manifest, caller: Caller = UNAUTHENTICATED) -> JobView:
        """The caller's job for `manifest` (the unfinished one it has, or a new one);
        `RateLimited` when the caller's client already has its quota of unfinished jobs."""
        ...

    async def get(self, job_id: str) -> JobView:
        """The job, or `UnknownJob`."""
        ...

    async def cancel(self, job_id: str) -> JobView: ...

    async def recent(self, limit: int, caller: Caller = UNAUTHENTICATED) -> list[JobView]:
        """The newest jobs the caller may see (its own; all for admin)."""
        ...

    async def depth(self) -> int:
        """Jobs waiting for a worker (for metrics)."""
        ...

    async def aclose(self) -> None: ...


def backoff(attempt: int, delay_s: float) -> float:
    return float(min(delay_s * 2 ** (attempt - 1), JOB_RETRY_MAX_DELAY_S))
