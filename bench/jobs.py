"""Jobs: background jobs, against streaming the same bytes.

* stream: the whole range streamed by `zipedge serve` without a cache and with the
  streaming limits raised, timed with the stream client (`bench/stream.py`): warm-up, one
  untimed stream that teaches the object index the members' CRCs, timed runs, one
  checked copy. It shares its Redis (the object index, the listings) with the big jobs.
* folder job: the range as a job into a cache folder in memory (the archives' tmpfs),
  one `zipedge worker --concurrency 1`: everything a job does except storage's ingest.
  As many runs as the stream has (`--reps`), each on its own service, worker and empty
  folder; the median run is the figure. They run before anything writes to storage, so
  they meet the machine the stream met (SeaweedFS flushes what it ingested for a while).
* storage ingest: the archive's bytes as one multipart upload from this process, the way
  a job's cache writer sends them (`bench/ingest.py`): what storage's write costs alone.
* big job: the same into a fresh S3 cache prefix. The service runs with
  `ZIPEDGE_STREAM_MAX_ENTRIES` below the range's size (so `GET /v1/zip` would answer 202
  too). Before each timed job: a warm-up job of the warm-up day, untimed (a worker's
  first job imports the S3 control plane's models), and `GET /v1/days` of the range (the
  page's preview before its Download button: the service lists the days, as the
  stream's timed runs find them listed); then `POST /v1/jobs` → poll `status_url` every
  0.1 s until `ready`. The archive is then downloaded once from `download_url` and
  checked like a stream's copy; it must be the streamed archive byte for byte (same id,
  same CRC-32).
* batch: N distinct single-day jobs posted at once, wall time until all are ready, with 1
  and with 2 workers (`--concurrency 1` each, so the worker count is what scales); each
  configuration gets its own Redis, cache prefix, service and workers, so no job and no
  in-process memo carries over. Every ready archive's size (a 1-byte ranged GET of
  `download_url`: a HEAD cannot pass a URL presigned for GET) must equal `bytes_total`.

CPU seconds of the workers, the service, SeaweedFS and Redis are recorded per phase, to
tell a CPU-bound machine from a slow design.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import curl
from bench.dataset import WARMUP_DAY, Content, Dataset
from bench.ingest import IngestRun, measure_ingest
from bench.s3 import S3Endpoint, delete_prefix, ensure_bucket, s3_client
from bench.stack import ZipedgeServer, ZipedgeWorker, ZipedgeWorkers, zipedge_env
from bench.stream import (
    BenchError,
    Client,
    ProcessTree,
    StreamSession,
    StreamSummary,
    curl_stream_once,
    file_crc32,
    verify_archive,
)
from service.stack.redis import RedisServer

POLL_S = 0.1  # status polls: a job's time is known to within this
JOB_TIMEOUT_S = 600.0
#: How long the archive of a range may keep its old layout once its CRCs are learned.
TEACH_TIMEOUT_S = 30.0
WORKER_READY_TIMEOUT_S = 60.0


@dataclass(slots=True)
class JobTiming:
    id: str
    label: str
    bytes_total: int = 0
    entries_total: int = 0
    seconds: float = 0.0  # POST sent -> first poll that saw "ready"
    status: str = ""
    attempts: int = 0
    size_checked: int | None = None  # Content-Range total of download_url
    server_s: float | None = None  # updated_at - created_at, as the service recorded them

    @property
    def mb_per_s(self) -> float:
        return self.bytes_total / self.seconds / 1e6 if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "bytes_total": self.bytes_total,
            "entries_total": self.entries_total,
            "seconds": self.seconds,
            "mb_per_s": self.mb_per_s,
            "status": self.status,
            "attempts": self.attempts,
            "size_checked": self.size_checked,
            "server_s": self.server_s,
        }


@dataclass(slots=True)
class Batch:
    workers: int
    jobs: list[JobTiming] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # per process group, during the batch
    error: str | None = None

    @property
    def jobs_per_min(self) -> float | None:
        return len(self.jobs) / self.wall_s * 60 if self.wall_s and self.error is None else None

    @property
    def bytes_total(self) -> int:
        return sum(j.bytes_total for j in self.jobs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "wall_s": self.wall_s,
            "jobs_per_min": self.jobs_per_min,
            "bytes_total": self.bytes_total,
            "mb_per_s": self.bytes_total / self.wall_s / 1e6 if self.wall_s else None,
            "cpu_s": self.cpu_s,
            "jobs": [j.as_dict() for j in self.jobs],
            "error": self.error,
        }


@dataclass(slots=True)
class JobsResult:
    describe: str
    objects: int
    object_bytes: int
    stream: StreamSummary | None = None
    stream_error: str | None = None
    #: the whole range as a job into the S3 cache: the figure
    big: JobTiming | None = None
    big_cpu_s: dict[str, float] = field(default_factory=dict)
    big_error: str | None = None
    #: the same job into a cache folder in memory (tmpfs): the job without storage's ingest;
    #: `reps` runs like the stream, each on a fresh cache; `folder` is the median run
    folder_runs: list[tuple[JobTiming, dict[str, float]]] = field(default_factory=list)
    folder_error: str | None = None
    #: the archive's bytes as one multipart upload alone: what storage's ingest costs
    ingest: IngestRun | None = None
    ingest_error: str | None = None
    batch_describe: str = ""
    batches: list[Batch] = field(default_factory=list)

    @property
    def folder(self) -> JobTiming | None:
        return self._folder_median[0] if self.folder_runs else None

    @property
    def folder_cpu_s(self) -> dict[str, float]:
        return self._folder_median[1] if self.folder_runs else {}

    @property
    def _folder_median(self) -> tuple[JobTiming, dict[str, float]]:
        ordered = sorted(self.folder_runs, key=lambda run: run[0].seconds)
        return ordered[(len(ordered) - 1) // 2]

    def over_stream(self, job: JobTiming | None) -> float | None:
        """A job's time over the stream's for the same bytes."""
        if self.stream is None or job is None or not job.seconds:
            return None
        return job.seconds / self.stream.total_s

    @property
    def ratio(self) -> float | None:
        return self.over_stream(self.big)

    @property
    def errors(self) -> list[str]:
        found = [e for e in (self.stream_error, self.big_error, self.folder_error, self.ingest_error) if e]
        return found + [f"{b.workers} worker(s): {b.error}" for b in self.batches if b.error]

    def as_dict(self) -> dict[str, Any]:
        return {
            "describe": self.describe,
            "objects": self.objects,
            "object_bytes": self.object_bytes,
            "stream": self.stream.as_dict() if self.stream else None,
            "stream_error": self.stream_error,
            "big_job": self.big.as_dict() if self.big else None,
            "big_job_cpu_s": self.big_cpu_s,
            "big_job_error": self.big_error,
            "job_over_stream": self.ratio,
            "folder_job": self.folder.as_dict() if self.folder else None,
            "folder_job_cpu_s": self.folder_cpu_s,
            "folder_job_error": self.folder_error,
            "folder_job_over_stream": self.over_stream(self.folder),
            "folder_job_runs_s": [job.seconds for job, _ in self.folder_runs],
            "ingest": self.ingest.as_dict() if self.ingest else None,
            "ingest_error": self.ingest_error,
            "batch_describe": self.batch_describe,
            "batches": [b.as_dict() for b in self.batches],
        }


@dataclass(frozen=True, slots=True)
class JobsOptions:
    env: dict[str, str]
    client: Client
    reps: int
    batch_jobs: int
    worker_counts: tuple[int, ...] = (1, 2)


class _CpuMeter:
    """CPU seconds of named process trees between start() and stop()."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._trees = {name: [ProcessTree(p) for p in group] for name, group in pids.items()}
        self._t0: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(t.cpu_s() for t in trees) for name, trees in self._trees.items()}

    def start(self) -> None:
        self._t0 = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {name: round(now[name] - self._t0[name], 2) for name in now}


@dataclass(slots=True)
class _Config:
    """One service + Redis + workers configuration, fresh for every phase."""

    server: ZipedgeServer
    workers: list[ZipedgeWorker]
    redis_pid: int | None


async def _wait_workers(redis_url: str, workers: list[ZipedgeWorker]) -> None:
    """Until every worker is registered with the saq queue (it then polls for jobs)."""
    from saq import Queue

    from service.jobs.saq_queue import QUEUE_NAME

    queue = Queue.from_url(redis_url, name=QUEUE_NAME)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    try:
        await queue.connect()
        while True:
            if any(w.exited for w in workers):
                tails = "\n".join(w.log_tail() for w in workers if w.exited)
                raise BenchError(f"a zipedge worker exited at start:\n{tails}")
            info = await queue.info()
            if len(info["workers"]) >= len(workers):
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{len(info['workers'])} of {len(workers)} workers registered")
            await asyncio.sleep(0.1)
    finally:
        await queue.disconnect()


@contextlib.asynccontextmanager
async def _config(
    ep: S3Endpoint,
    ds: Dataset,
    opts: JobsOptions,
    workers: int,
    name: str,
    logs: Path,
    tmp: Path,
    redis: RedisServer | None = None,
    *,
    folder_cache: bool = False,
) -> AsyncIterator[_Config]:
    """The service and `workers` workers on a fresh cache (an S3 prefix, or a folder both
    reach), and on `redis` (a fresh one unless given)."""
    cache_bucket = f"{ep.bucket}-cache"
    prefix = f"jobs-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    async with contextlib.AsyncExitStack() as stack:
        if folder_cache:
            folder = tmp / prefix
            folder.mkdir(parents=True)
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            cache = f"file://{folder}"
        else:
            async with s3_client(ep, pool=4) as s3:
                await ensure_bucket(s3, cache_bucket)

            async def cleanup() -> None:
                async with s3_client(ep, pool=4) as s3:
                    await delete_prefix(s3, cache_bucket, f"{prefix}/")

            stack.push_async_callback(cleanup)
            cache = f"s3://{cache_bucket}/{prefix}"
        if redis is None:
            redis = stack.enter_context(RedisServer(tmp / f"redis-jobs-{name}"))
        env = {
            **opts.env,
            "ZIPEDGE_CACHE": cache,
            "ZIPEDGE_REDIS_URL": redis.url,
            # Below the range's entry count: the range is a job, also for GET /v1/zip.
            "ZIPEDGE_STREAM_MAX_ENTRIES": str(min(1000, ds.count - 1)),
        }
        source = f"s3://{ep.bucket}/{ds.prefix}"
        server = await stack.enter_async_context(
            ZipedgeServer(ep, source, logs / f"zipedge-jobs-{name}.log", env)
        )
        procs = await stack.enter_async_context(
            ZipedgeWorkers(zipedge_env(ep, source, env), logs, name, workers)
        )
        await _wait_workers(redis.url, procs)
        yield _Config(server, procs, redis.pid)


def _meter(cfg: _Config, seaweedfs_pid: int | None) -> _CpuMeter:
    pids = {"workers": [w.pid for w in cfg.workers], "service": [cfg.server.pid]}
    if seaweedfs_pid is not None:
        pids["seaweedfs"] = [seaweedfs_pid]
    if cfg.redis_pid is not None:
        pids["redis"] = [cfg.redis_pid]
    return _CpuMeter(pids)


async def _submit(client: httpx.AsyncClient, base_url: str, body: dict[str, str], label: str) -> JobTiming:
    resp = await client.post(f"{base_url}/v1/jobs", json=body)
    if resp.status_code != 202:
        raise BenchError(f"POST /v1/jobs {body}: HTTP {resp.status_code}: {resp.text[:300]}")
    doc = resp.json()
    if doc["status"] == "ready":
        raise BenchError(f"job {doc['id']} ({label}) was ready at once: the cache was not fresh")
    return JobTiming(doc["id"], label, bytes_total=doc["bytes_total"], entries_total=doc["entries_total"])


async def _poll(client: httpx.AsyncClient, base_url: str, job: JobTiming, t0: float) -> dict[str, Any]:
    deadline = t0 + JOB_TIMEOUT_S
    while True:
        resp = await client.get(f"{base_url}/v1/jobs/{job.id}")
        resp.raise_for_status()
        doc: dict[str, Any] = resp.json()
        if doc["status"] in ("ready", "failed", "cancelled"):
            job.seconds = time.perf_counter() - t0
            job.status = doc["status"]
            job.attempts = int(doc.get("attempts", 0))
            job.server_s = float(doc["updated_at"]) - float(doc["created_at"])
            if job.status != "ready":
                raise BenchError(f"job {job.id} ({job.label}): {job.status}: {doc.get('error')}")
            return doc
        if time.perf_counter() > deadline:
            raise BenchError(f"job {job.id} ({job.label}) not ready after {JOB_TIMEOUT_S:.0f} s: {doc}")
        await asyncio.sleep(POLL_S)


async def _check_size(job: JobTiming, download_url: str) -> None:
    probe = await curl.fetch(download_url, headers={"Range": "bytes=0-0"}, max_time_s=30)
    job.size_checked = probe.range_total
    if probe.status != 206 or job.size_checked != job.bytes_total:
        raise BenchError(
            f"job {job.id} ({job.label}): download_url answered {probe.status} with "
            f"Content-Range {probe.content_range!r}; bytes_total is {job.bytes_total}"
        )


async def teach_crcs(url: str, pid: int, log: Callable[[str], None]) -> None:
    """Stream `url` once, untimed, so the object index learns every member's CRC-32, then
    wait until the service answers with the archive that carries them (another ETag: the
    day listings are refreshed in the background after the lesson)."""
    taught = await curl_stream_once(url, pid)
    deadline = time.monotonic() + TEACH_TIMEOUT_S
    while (head := await curl.fetch(url, method="HEAD", max_time_s=30)).etag == taught.etag:
        if head.status != 200 or time.monotonic() > deadline:
            raise BenchError(f"HEAD {url}: HTTP {head.status}, still ETag {head.etag} after the lesson")
        await asyncio.sleep(POLL_S)
    log(f"jobs/stream: untimed first stream {taught.total_s:.2f} s taught the CRCs ({head.etag})")


async def _stream(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    opts: JobsOptions,
    redis: RedisServer,
    logs: Path,
    archives: Path,
    log: Callable[[str], None],
) -> StreamSummary:
    """The reference: the range streamed without a cache, the streaming limits raised.
    One untimed stream first teaches the object index the members' CRCs, so the timed
    runs and the checked copy are the same archive."""
    env = {
        **opts.env,
        "ZIPEDGE_STREAM_MAX_ENTRIES": str(max(20_000, 2 * ds.count)),
        "ZIPEDGE_REDIS_URL": redis.url,
    }
    source = f"s3://{ep.bucket}/{ds.prefix}"
    async with (
        ZipedgeServer(ep, source, logs / "zipedge-jobs-stream.log", env) as server,
        StreamSession(server.base_url, server.pid, ds, content, archives, opts.client) as session,
    ):
        await teach_crcs(f"{server.base_url}/v1/zip?{ds.query}", server.pid, log)
        for rep in range(1, opts.reps + 1):
            run = await session.run()
            log(f"jobs/stream #{rep}: {run.total_s:.2f} s, {run.mb_per_s:.0f} MB/s")
        return await session.check()


async def _timed_job(
    cfg: _Config, client: httpx.AsyncClient, ds: Dataset, seaweedfs_pid: int | None
) -> tuple[JobTiming, dict[str, float], dict[str, Any]]:
    """A warm-up job first (the warm-up day; untimed: a worker's first job imports the S3
    control plane's models, once per process) and the range's `GET /v1/days` (what the
    page asks before its Download button is clicked: the service lists the days, as the
    stream's timed runs find them listed), then the whole range, timed from the POST to
    the first poll that sees it ready, with the CPU of every process meanwhile."""
    base = cfg.server.base_url
    day = WARMUP_DAY.isoformat()
    warm = await _submit(client, base, {"from": day, "to": day}, "warm-up")
    await _poll(client, base, warm, time.perf_counter())
    body = {"from": ds.first_day.isoformat(), "to": ds.last_day.isoformat()}
    days = await client.get(f"{base}/v1/days", params=body)
    if days.status_code != 200 or days.json()["objects"] != ds.count:
        raise BenchError(f"GET /v1/days {body}: HTTP {days.status_code}: {days.text[:300]}")
    meter = _meter(cfg, seaweedfs_pid)
    meter.start()
    t0 = time.perf_counter()
    job = await _submit(client, base, body, f"{ds.first_day}..{ds.last_day}")
    doc = await _poll(client, base, job, t0)
    cpu = meter.stop()
    await _check_size(job, doc["download_url"])
    return job, cpu, doc


async def _big_job(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    opts: JobsOptions,
    res: JobsResult,
    seaweedfs_pid: int | None,
    logs: Path,
    tmp: Path,
    archives: Path,
    redis: RedisServer,
) -> None:
    async with (
        _config(ep, ds, opts, 1, "big", logs, tmp, redis) as cfg,
        httpx.AsyncClient(timeout=30.0) as client,
    ):
        job, res.big_cpu_s, doc = await _timed_job(cfg, client, ds, seaweedfs_pid)
        res.big = job
        # Once, untimed: the job's archive must be the streamed one, byte for byte.
        out = archives / "job.zip"
        try:
            got = await curl.fetch(doc["download_url"], out)
            if got.status != 200 or got.size != job.bytes_total:
                raise BenchError(f"job download: HTTP {got.status}, {got.size} B of {job.bytes_total}")
            await asyncio.to_thread(verify_archive, out, ds.objects, content)
            crc = await asyncio.to_thread(file_crc32, out)
        finally:
            out.unlink(missing_ok=True)
        if res.stream is not None:
            # The job's id names its objects; the archive id (the stream's ETag) its layout.
            built = (f'"{doc.get("archive_id")}"', crc)
            if built != (res.stream.etag, res.stream.checked_crc32):
                raise BenchError(
                    f"job {job.id}: archive {built[0]}, CRC {crc:08x}; the stream's "
                    f"{res.stream.etag}, CRC {res.stream.checked_crc32 or 0:08x}"
                )


async def _folder_job(
    ep: S3Endpoint,
    ds: Dataset,
    opts: JobsOptions,
    res: JobsResult,
    seaweedfs_pid: int | None,
    logs: Path,
    archives: Path,
    redis: RedisServer,
) -> None:
    """The same job with the cache a folder in memory (the archives' tmpfs when it has
    room): everything a job does but storage's ingest. `opts.reps` runs, as many as the
    stream's, each with its own service, worker and empty cache folder."""
    for rep in range(1, opts.reps + 1):
        async with (
            _config(ep, ds, opts, 1, f"folder{rep}", logs, archives, redis, folder_cache=True) as cfg,
            httpx.AsyncClient(timeout=30.0) as client,
        ):
            job, cpu, _ = await _timed_job(cfg, client, ds, seaweedfs_pid)
            res.folder_runs.append((job, cpu))


async def _batch(
    ep: S3Endpoint,
    ds: Dataset,
    opts: JobsOptions,
    workers: int,
    seaweedfs_pid: int | None,
    logs: Path,
    tmp: Path,
) -> Batch:
    batch = Batch(workers)
    days = [ds.first_day + timedelta(days=i) for i in range(opts.batch_jobs)]
    async with (
        _config(ep, ds, opts, workers, f"batch{workers}", logs, tmp) as cfg,
        httpx.AsyncClient(timeout=30.0) as client,
    ):
        meter = _meter(cfg, seaweedfs_pid)
        meter.start()
        t0 = time.perf_counter()
        batch.jobs = list(
            await asyncio.gather(
                *(
                    _submit(client, cfg.server.base_url, {"from": d.isoformat(), "to": d.isoformat()}, str(d))
                    for d in days
                )
            )
        )
        docs = await asyncio.gather(*(_poll(client, cfg.server.base_url, j, t0) for j in batch.jobs))
        batch.wall_s = max(j.seconds for j in batch.jobs)
        batch.cpu_s = meter.stop()
        checks = (_check_size(j, d["download_url"]) for j, d in zip(batch.jobs, docs, strict=True))
        await asyncio.gather(*checks)
    return batch


async def measure(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    opts: JobsOptions,
    *,
    seaweedfs_pid: int | None,
    logs: Path,
    tmp: Path,
    archives: Path,
    log: Callable[[str], None],
) -> JobsResult:
    """Every phase; errors are recorded per phase and the others still run."""
    per_day = ds.count // ((ds.last_day - ds.first_day).days + 1)
    res = JobsResult(ds.describe(), ds.count, ds.total_bytes)
    res.batch_describe = f"{opts.batch_jobs} single-day jobs of {per_day} objects"

    # The stream and the big job share one Redis: its object index holds the CRCs the
    # stream taught, so the job builds the very archive that was streamed (members with
    # their CRCs in the local headers), as every archive of a range after its first does.
    with RedisServer(tmp / "redis-jobs-stream") as redis:
        try:
            res.stream = await _stream(ep, ds, content, opts, redis, logs, archives, log)
        except Exception as exc:
            res.stream_error = f"{type(exc).__name__}: {exc}"
            log(f"jobs/stream FAILED:\n{traceback.format_exc()}")

        try:
            await _folder_job(ep, ds, opts, res, seaweedfs_pid, logs, archives, redis)
            for n, (run, cpu) in enumerate(res.folder_runs, start=1):
                log(f"jobs/folder #{n}: {run.seconds:.2f} s, CPU {cpu}")
        except Exception as exc:
            res.folder_error = f"folder cache: {type(exc).__name__}: {exc}"
            log(f"jobs/folder FAILED:\n{traceback.format_exc()}")

        try:
            res.ingest = await measure_ingest(
                ep,
                res.stream.archive_bytes if res.stream else ds.total_bytes,
                {"seaweedfs": seaweedfs_pid},
                bucket=f"{ep.bucket}-cache",
            )
            ing = res.ingest
            log(f"jobs/ingest: {ing.seconds:.2f} s, {ing.mb_per_s:.0f} MB/s, CPU {ing.cpu_s}")
        except Exception as exc:
            res.ingest_error = f"{type(exc).__name__}: {exc}"
            log(f"jobs/ingest FAILED:\n{traceback.format_exc()}")

        try:
            await _big_job(ep, ds, content, opts, res, seaweedfs_pid, logs, tmp, archives, redis)
            assert res.big is not None
            log(f"jobs/big: {res.big.seconds:.2f} s, {res.big.mb_per_s:.0f} MB/s, CPU {res.big_cpu_s}")
        except Exception as exc:
            res.big_error = f"{type(exc).__name__}: {exc}"
            log(f"jobs/big FAILED:\n{traceback.format_exc()}")

    for workers in opts.worker_counts:
        try:
            batch = await _batch(ep, ds, opts, workers, seaweedfs_pid, logs, tmp)
            log(
                f"jobs/batch {workers} worker(s): {len(batch.jobs)} jobs in {batch.wall_s:.2f} s, "
                f"{batch.jobs_per_min:.1f} jobs/min, CPU {batch.cpu_s}"
            )
        except Exception as exc:
            batch = Batch(workers, error=f"{type(exc).__name__}: {exc}")
            log(f"jobs/batch {workers} FAILED:\n{traceback.format_exc()}")
        res.batches.append(batch)
    return res
