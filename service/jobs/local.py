"""The in-process job runner of the embedded default (no Redis): jobs are tasks of the
service itself, with the same retries and the same build as a saq worker's."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from service.archive.manifest import Manifest
from service.constants import (
    DEFAULT_MAX_JOBS_PER_CLIENT,
    JOB_RETRIES,
    JOB_TTL_S,
    LOCAL_MAX_JOBS,
)
from service.exceptions import BuildFailed, JobCancelled, JobReady, UnknownJob
from service.identity import UNAUTHENTICATED, Caller
from service.jobs.build import ArchiveBuilder
from service.jobs.gate import LocalCommitGate, cancel_wins
from service.jobs.model import JobStatus, JobView
from service.jobs.queue import backoff, job_id_for, too_many_jobs
from service.metrics import JOB_SECONDS
from service.writer import Progress

logger = logging.getLogger(__name__)


@dataclass
class _LocalJob:
    view: JobView
    task: asyncio.Task[None] | None = None


class LocalJobQueue:
    def __init__(
        self,
        builder: ArchiveBuilder,
        *,
        concurrency: int,
        retry_delay_s: float,
        max_per_client: int = DEFAULT_MAX_JOBS_PER_CLIENT,
    ) -> None:
        self._builder = builder
        self._retry_delay_s = retry_delay_s
        self._max_per_client = max_per_client
        self._slots = asyncio.Semaphore(concurrency)
        self._jobs: dict[str, _LocalJob] = {}
        self._gate = LocalCommitGate()

    async def submit(self, manifest: Manifest, caller: Caller = UNAUTHENTICATED) -> JobView:
        job_id = job_id_for(manifest.objects_id, caller.sub)
        existing = self._jobs.get(job_id)
        if existing is not None and not existing.view.status.terminal:
            return existing.view
        client = caller.client_id
        unfinished = sum(
            1 for j in self._jobs.values() if j.view.client == client and not j.view.status.terminal
        )
        if unfinished >= self._max_per_client:
            raise too_many_jobs(self._max_per_client)
        now = time.time()
        view = JobView(
            id=job_id,
            status=JobStatus.QUEUED,
            filename=manifest.filename,
            bytes_total=manifest.size,
            entries_total=len(manifest.entries),
            created_at=now,
            updated_at=now,
            archive_id=manifest.archive_id,
            objects_id=manifest.objects_id,
            owner=caller.sub,
            client=client,
        )
        job = _LocalJob(view)
        self._jobs[view.id] = job
        await self._gate.forget(view.id)  # a new job of the id: nothing decided for it yet
        job.task = asyncio.create_task(self._run(view, manifest))
        self._prune()
        return view

    async def _run(self, view: JobView, manifest: Manifest) -> None:
        async def report(progress: Progress) -> None:
            view.bytes_done, view.entries_done = progress.bytes_done, progress.entries_done
            view.updated_at = time.time()

        try:
            async with self._slots:
                for attempt in range(1, JOB_RETRIES + 1):
                    view.status, view.attempts, view.updated_at = JobStatus.RUNNING, attempt, time.time()
                    started = time.monotonic()
                    try:
                        await self._builder.build(
                            manifest,
                            report,
                            job_id=view.id,
                            gate=self._gate,
                            queued_at=view.created_at if attempt == 1 else None,
                        )
                    except JobCancelled:
                        view.status = JobStatus.CANCELLED
                        return
                    except BuildFailed as exc:
                        JOB_SECONDS.labels("failed").observe(time.monotonic() - started)
                        view.error = exc.message
                        if not exc.retryable or attempt == JOB_RETRIES:
                            view.status = JobStatus.FAILED
                            return
                        view.status = JobStatus.QUEUED
                        await asyncio.sleep(backoff(attempt, self._retry_delay_s))
                        continue
                    JOB_SECONDS.labels("ready").observe(time.monotonic() - started)
                    view.status, view.error = JobStatus.READY, None
                    return
        except asyncio.CancelledError:
            view.status = JobStatus.CANCELLED
            raise
        except Exception as exc:  # a bug: the job fails visibly rather than hanging
            logger.exception("job %s crashed", view.id)
            view.status, view.error = JobStatus.FAILED, f"internal error: {exc}"
        finally:
            view.updated_at = time.time()

    async def get(self, job_id: str) -> JobView:
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job.view

    async def cancel(self, job_id: str) -> JobView:
        """Stop the build, unless its archive is committed already (`JobReady`): then the
        job is ready, never `cancelled` over a committed cache object."""
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        if job.view.status is JobStatus.READY:
            raise JobReady(f"job {job_id} is ready: its archive is built")
        if job.view.status.terminal or job.task is None:
            return job.view
        if not await cancel_wins(self._gate, job_id):
            await asyncio.gather(job.task, return_exceptions=True)  # it is setting `ready`
            raise JobReady(f"job {job_id} is ready: its archive was committed before the cancel")
        job.view.status = JobStatus.CANCELLED
        job.task.cancel()
        await asyncio.gather(job.task, return_exceptions=True)  # its upload aborted by now
        return job.view

    async def recent(self, limit: int, caller: Caller = UNAUTHENTICATED) -> list[JobView]:
        views = sorted(
            (j.view for j in self._jobs.values() if caller.owns(j.view.owner)),
            key=lambda v: v.created_at,
            reverse=True,
        )
        return views[:limit]

    async def depth(self) -> int:
        return sum(1 for j in self._jobs.values() if j.view.status is JobStatus.QUEUED)

    def _prune(self) -> None:
        cutoff = time.time() - JOB_TTL_S
        finished = sorted(
            (j for j in self._jobs.values() if j.view.status.terminal), key=lambda j: j.view.updated_at
        )
        excess = len(self._jobs) - LOCAL_MAX_JOBS
        for job in finished:
            if job.view.updated_at < cutoff or excess > 0:
                del self._jobs[job.view.id]
                excess -= 1

    async def aclose(self) -> None:
        tasks = [j.task for j in self._jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
