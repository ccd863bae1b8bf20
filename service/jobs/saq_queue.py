"""Jobs on saq + Redis: any number of `zipedge worker` processes on any number of hosts.

Why saq: its job `key` dedupes (our key is the archive id),
a job heartbeats through `job.update()` (our progress reports), the sweep retries the
jobs of workers that stopped heartbeating (crash recovery), retries back off
exponentially, and `abort` cancels a running job. saq's own statuses and tracebacks stay
in here; the outside sees `JobView`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis import asyncio as aioredis
from saq import CronJob, Job, Worker
from saq.job import Status
from saq.types import Context, PartialTimersDict

from service import tracing
from service.archive.manifest import Manifest
from service.constants import (
    JANITOR_INTERVAL_S,
    JOB_CANCEL_POLL_S,
    JOB_CANCEL_WAIT_S,
    JOB_RETRIES,
    JOB_RETRY_MAX_DELAY_S,
    JOB_TTL_S,
    RECENT_JOBS_KEPT,
    RECENT_JOBS_LISTED,
    REDIS_SOCKET_TIMEOUT_S,
    WORKER_SHUTDOWN_GRACE_S,
)
from service.exceptions import BuildFailed, DependencyUnavailable, JobCancelled, JobReady, UnknownJob
from service.identity import UNAUTHENTICATED, Caller
from service.jobs.build import ArchiveBuilder
from service.jobs.gate import CommitGate, RedisCommitGate, cancel_wins
from service.jobs.model import JobStatus, JobView
from service.jobs.queue import job_id_for, too_many_jobs
from service.jobs.sweep import SweepSafeQueue
from service.manifests import ManifestStore
from service.metrics import JOB_SECONDS, REGISTRY
from service.runtime import Runtime, open_runtime, redis_client
from service.settings import Settings
from service.streams import Streams
from service.uploads import Uploads, uploads_of
from service.writer import Progress

logger = logging.getLogger(__name__)

QUEUE_NAME = "zipedge"
FUNCTION = "build_archive"
#: Sorted set of job ids by creation time, for the listing of recent jobs.
RECENT_KEY = "zipedge:jobs:recent"
#: The same, per client (`client_id`): its listing and its count of unfinished jobs.
CLIENT_KEY_PREFIX = "zipedge:jobs:client:"
#: The abort reason of DELETE /v1/jobs/{id}: only it means "cancelled". saq also aborts
#: jobs its sweep finds in an odd state (e.g. caught between dequeue and start); such a
#: job is retried, and if it ends aborted that is a failure, not a cancellation.
CANCEL_MESSAGE = "cancelled by request"


class JobContext(Context, total=False):
    builder: ArchiveBuilder
    gate: CommitGate
    manifests: ManifestStore
    runtime: Runtime
    uploads: Uploads


class PromptWorker(Worker[JobContext]):
    """saq's worker, whose upkeep loops wake up when it is told to stop.

    saq 0.26 runs each upkeep task (abort, schedule, sweep, worker info) as "run, then
    `asyncio.sleep(period)`, then look at the stop event", and its shutdown waits for every
    task: an idle worker took up to the longest period (the sweep's ZIPEDGE_JOB_SWEEP_S,
    the info's 10 s) to exit on SIGTERM. Here the pause between two runs is a wait on the
    stop event, so a stop ends it at once; a run in progress (a sweep re-queueing a job) is
    still never cut short. The loop is otherwise saq 0.26's `upkeep` as written.
    """

    async def upkeep(self) -> list[asyncio.Task[None]]:
        async def poll(func: Callable[[int], Awaitable[Any]], every: int, arg: int | None = None) -> None:
            while not self.event.is_set():
                try:
                    await func(arg or every)
                except (Exception, asyncio.CancelledError):
                    if self.event.is_set():
                        return
                    logger.exception("Upkeep task failed unexpectedly")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.event.wait(), every)

        timers = self.timers
        return [
            asyncio.create_task(poll(self.abort, timers["abort"])),
            asyncio.create_task(poll(self.schedule, timers["schedule"])),
            asyncio.create_task(poll(self.queue.sweep, timers["sweep"])),
            asyncio.create_task(poll(self.worker_info, timers["worker_info"], timers["worker_info"] + 1)),
        ]


def _view(job: Job) -> JobView:
    meta = job.meta
    status = {
        Status.NEW: JobStatus.QUEUED,
        Status.QUEUED: JobStatus.QUEUED,
        Status.ACTIVE: JobStatus.RUNNING,
        Status.ABORTING: JobStatus.CANCELLED if job.error == CANCEL_MESSAGE else JobStatus.RUNNING,
        Status.ABORTED: JobStatus.CANCELLED if job.error == CANCEL_MESSAGE else JobStatus.FAILED,
        Status.FAILED: JobStatus.FAILED,
        Status.COMPLETE: JobStatus.READY,
    }[job.status]
    error = meta.get("error")
    if job.status is Status.COMPLETE and isinstance(job.result, dict) and not job.result.get("ok", True):
        cancelled = job.result.get("cancelled")
        status, error = (
            (JobStatus.CANCELLED, None) if cancelled else (JobStatus.FAILED, job.result.get("error"))
        )
    if status is JobStatus.FAILED and not error:
        error = (job.error or "failed").strip().splitlines()[-1]
    return JobView(
        id=job.key,
        archive_id=str(job.kwargs.get("archive_id", job.key)) if job.kwargs else job.key,
        objects_id=str(meta.get("objects_id", job.key)),
        owner=str(meta.get("owner", "")),
        client=str(meta.get("client", "")),
        status=status,
        filename=meta.get("filename", f"{job.key}.zip"),
        bytes_total=int(meta.get("bytes_total", 0)),
        entries_total=int(meta.get("entries_total", 0)),
        bytes_done=int(meta.get("bytes_done", 0)),
        entries_done=int(meta.get("entries_done", 0)),
        attempts=job.attempts,
        created_at=float(meta.get("created_at", job.queued / 1000)),
        updated_at=(job.touched or job.queued) / 1000,
        error=error if status in (JobStatus.FAILED, JobStatus.QUEUED) and error else None,
    )


class SaqJobQueue:
    """The client side, used by the service: submit, read, cancel, list."""

    def __init__(self, settings: Settings, manifests: ManifestStore) -> None:
        self._settings = settings
        self._manifests = manifests
        # One client for the queue and our indexes, retrying once on a dropped connection.
        self._redis = redis_client(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_S * 5)
        self.queue = SweepSafeQueue(self._redis, name=QUEUE_NAME)
        self._gate = RedisCommitGate(self._redis)

    async def _job(self, job_id: str) -> Job:
        try:
            job = await self.queue.job(job_id)
        except (OSError, aioredis.RedisError) as exc:
            raise DependencyUnavailable(f"job queue: {exc}") from exc
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    async def submit(self, manifest: Manifest, caller: Caller = UNAUTHENTICATED) -> JobView:
        settings = self._settings
        job_id = job_id_for(manifest.objects_id, caller.sub)  # one job per set of objects and owner
        client = caller.client_id
        try:
            existing = await self.queue.job(job_id)
        except (OSError, aioredis.RedisError) as exc:
            raise DependencyUnavailable(f"job queue: {exc}") from exc
        if existing is not None and not _view(existing).status.terminal:
            return _view(existing)
        limit = settings.limits.max_jobs_per_client
        if await self._unfinished(client, limit) >= limit:
            raise too_many_jobs(limit)
        await self._manifests.put(manifest)  # the worker loads it by id
        job = Job(
            function=FUNCTION,
            kwargs={"archive_id": manifest.archive_id},
            key=job_id,
            timeout=0,  # builds are long; liveness is the heartbeat's business
            heartbeat=settings.job_heartbeat_s,
            retries=JOB_RETRIES,
            retry_delay=settings.job_retry_delay_s,
            retry_backoff=JOB_RETRY_MAX_DELAY_S,
            ttl=JOB_TTL_S,
            meta={
                "filename": manifest.filename,
                "bytes_total": manifest.size,
                "entries_total": len(manifest.entries),
                "created_at": time.time(),
                "objects_id": manifest.objects_id,
                "owner": caller.sub,
                "client": client,
                "trace": tracing.inject(),
            },
        )
        try:
            if existing is not None:  # a finished job of this id: its gate is for the old one
                await self._gate.forget(job_id)
            await self.queue.enqueue(job)  # None when the same job is already queued/running
            now = time.time()
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in (RECENT_KEY, CLIENT_KEY_PREFIX + client):
                    pipe.zadd(key, {job_id: now})
                    pipe.zremrangebyrank(key, 0, -RECENT_JOBS_KEPT - 1)
                pipe.expire(CLIENT_KEY_PREFIX + client, JOB_TTL_S)
                await pipe.execute()
        except (OSError, aioredis.RedisError) as exc:
            raise DependencyUnavailable(f"job queue: {exc}") from exc
        return _view(await self._job(job_id))

    async def _unfinished(self, client: str, limit: int) -> int:
        """The client's unfinished jobs among its newest (a job older than several times
        the quota of newer ones has long finished, or is not worth a read per submit)."""
        views = await self._listed(CLIENT_KEY_PREFIX + client, max(RECENT_JOBS_LISTED, 4 * limit))
        return sum(1 for view in views if not view.status.terminal)

    async def _listed(self, key: str, limit: int) -> list[JobView]:
        try:
            found = await self._redis.zrevrange(key, 0, limit - 1)
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in found]
            jobs = await self.queue.jobs(ids) if ids else []
        except (OSError, aioredis.RedisError) as exc:
            raise DependencyUnavailable(f"job queue: {exc}") from exc
        return [_view(job) for job in jobs if job is not None]

    async def get(self, job_id: str) -> JobView:
        return _view(await self._job(job_id))

    async def cancel(self, job_id: str) -> JobView:
        """Stop the build wherever it runs, unless its archive is committed already
        (`JobReady`: the job is ready, never `cancelled` over a committed cache object).
        Answers once the worker has stopped it (its upload aborted), within a few seconds."""
        job = await self._job(job_id)
        view = _view(job)
        if view.status is JobStatus.READY:
            raise JobReady(f"job {job_id} is ready: its archive is built")
        if view.status.terminal:
            return view
        if not await cancel_wins(self._gate, job_id):
            raise JobReady(f"job {job_id} is ready: its archive was committed before the cancel")
        try:
            await self.queue.abort(job, CANCEL_MESSAGE)
        except (OSError, aioredis.RedisError) as exc:
            raise DependencyUnavailable(f"job queue: {exc}") from exc
        return await self._stopped(job_id)

    async def _stopped(self, job_id: str) -> JobView:
        """The job once its worker has let go of it (or after JOB_CANCEL_WAIT_S)."""
        deadline = time.monotonic() + JOB_CANCEL_WAIT_S
        while True:
            job = await self._job(job_id)
            if job.status in (Status.ABORTED, Status.COMPLETE, Status.FAILED) or time.monotonic() > deadline:
                return _view(job)
            await asyncio.sleep(JOB_CANCEL_POLL_S)

    async def recent(self, limit: int, caller: Caller = UNAUTHENTICATED) -> list[JobView]:
        if caller.admin:
            return await self._listed(RECENT_KEY, limit)
        views = await self._listed(CLIENT_KEY_PREFIX + caller.client_id, limit)
        return [view for view in views if caller.owns(view.owner)]

    async def depth(self) -> int:
        try:
            return int(await self.queue.count("queued"))
        except (OSError, aioredis.RedisError):
            return 0

    async def connect(self) -> None:
        await self.queue.connect()

    async def aclose(self) -> None:
        await self.queue.disconnect()  # closes the shared client too


async def build_archive_job(ctx: JobContext, *, archive_id: str) -> dict[str, Any]:
    """The saq function. Transient failures raise (saq retries with backoff, then fails
    the job); permanent ones return a failed result at once."""
    job = ctx["job"]
    manifest = await ctx["manifests"].get(archive_id)

    async def report(progress: Progress) -> None:
        job.meta.update(bytes_done=progress.bytes_done, entries_done=progress.entries_done)
        job.meta.pop("error", None)
        await job.update(meta=job.meta)  # also the heartbeat

    started = time.monotonic()
    outcome = "cancelled"
    try:
        await ctx["builder"].build(
            manifest,
            report,
            job_id=job.key,
            gate=ctx["gate"],
            queued_at=job.queued / 1000 if job.queued and job.attempts <= 1 else None,
            trace=job.meta.get("trace"),
        )
        outcome = "ready"
    except JobCancelled:
        return {"ok": False, "cancelled": True}
    except BuildFailed as exc:
        outcome = "failed"
        job.meta["error"] = exc.message
        await job.update(meta=job.meta)
        if exc.retryable:
            raise
        return {"ok": False, "error": exc.message}
    finally:
        JOB_SECONDS.labels(outcome).observe(time.monotonic() - started)
    return {"ok": True}


async def janitor_job(ctx: JobContext) -> dict[str, Any]:
    """The saq cron job: the same sweep as `zipedge janitor` (one worker runs each tick)."""
    from service.janitor import run_janitor

    lines = await run_janitor(ctx["runtime"], ctx["uploads"])
    for line in lines:
        logger.info("janitor: %s", line)
    return {"lines": len(lines)}


#: Every JANITOR_INTERVAL_S (300 s: every fifth minute).
JANITOR_CRON = f"*/{JANITOR_INTERVAL_S // 60} * * * *"


async def run_worker(
    settings: Settings, *, concurrency: int, burst: bool = False, metrics_port: int = 0
) -> None:
    """`zipedge worker`: process jobs until SIGINT/SIGTERM, then finish or hand back
    running jobs within the grace period (a handed-back job is retried elsewhere)."""
    if not settings.redis_url:
        raise DependencyUnavailable("zipedge worker needs ZIPEDGE_REDIS_URL")
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=REGISTRY)
    async with open_runtime(settings) as runtime:
        streams = Streams(runtime)
        # No socket timeout: the worker blocks on Redis waiting for jobs.
        queue = SweepSafeQueue(redis_client(settings.redis_url, socket_timeout=None), name=QUEUE_NAME)
        timers: PartialTimersDict = {
            "schedule": 1,
            "worker_info": 10,
            "sweep": settings.job_sweep_s,
            "abort": 1,
        }
        worker = PromptWorker(
            queue,
            functions=[(FUNCTION, build_archive_job)],
            cron_jobs=[CronJob(janitor_job, cron=JANITOR_CRON, timeout=JANITOR_INTERVAL_S)],
            concurrency=concurrency,
            timers=timers,
            shutdown_grace_period_s=WORKER_SHUTDOWN_GRACE_S,
            burst=burst,
            dequeue_timeout=1.0,
        )
        worker.context["builder"] = ArchiveBuilder(runtime, streams)
        assert runtime.redis is not None  # a worker needs ZIPEDGE_REDIS_URL
        worker.context["gate"] = RedisCommitGate(runtime.redis)
        worker.context["manifests"] = runtime.manifests
        worker.context["runtime"] = runtime
        worker.context["uploads"] = uploads_of(runtime)
        await queue.connect()
        try:
            await worker.start()
        finally:
            await streams.aclose()
            await queue.disconnect()
            await asyncio.sleep(0)
