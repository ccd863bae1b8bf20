"""The job engine's small interface.

`JobQueue` is all the web layer knows: submit a manifest (idempotent: the job id is the
archive id, so concurrent requests for one archive share one job), read a job, cancel
it, list recent ones. `service.jobs.saq_queue` implements it on saq + Redis for any
number of worker processes; `service.jobs.local` runs jobs as tasks of the service itself.
"""

from __future__ import annotations

from typing import Protocol

from service.archive.manifest import Manifest
from service.constants import JOB_RETRY_MAX_DELAY_S
from service.jobs.model import JobView


class JobQueue(Protocol):
    async def submit(self, manifest: Manifest) -> JobView: ...

    async def get(self, job_id: str) -> JobView:
        """The job, or `UnknownJob`."""
        ...

    async def cancel(self, job_id: str) -> JobView: ...

    async def recent(self, limit: int) -> list[JobView]: ...

    async def depth(self) -> int:
        """Jobs waiting for a worker (for metrics)."""
        ...

    async def aclose(self) -> None: ...


def backoff(attempt: int, delay_s: float) -> float:
    return float(min(delay_s * 2 ** (attempt - 1), JOB_RETRY_MAX_DELAY_S))
