"""Jobs on saq with real parts: redis-server, SeaweedFS (SigV4), `zipedge worker`
processes, and a delaying TCP proxy between the workers and S3 so a build takes long
enough to cancel or kill for real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.app import create_app
from service.settings import Settings
from service.stack.ports import free_port
from service.stack.redis import RedisServer
from service.stack.seaweedfs import SeaweedFS
from tests.servers import serve
from tests.zipcheck import check_archive, sha256

pytestmark = pytest.mark.integration

BIG = {"from": "2025-01-01", "to": "2025-01-03"}
ROOT = Path(__file__).resolve().parents[2]


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Jobs:
    seaweedfs: SeaweedFS
    client: Any
    source_bucket: str
    cache_bucket: str
    redis_url: str
    objects: dict[str, bytes]
    tmp: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "ZIPEDGE_SOURCE": f"s3://{self.source_bucket}/photos",
            "ZIPEDGE_CACHE": f"s3://{self.cache_bucket}/archives",
            "ZIPEDGE_REDIS_URL": self.redis_url,
            "ZIPEDGE_DATA_DIR": str(self.tmp / "var"),
            "ZIPEDGE_STREAM_MAX_ENTRIES": "10",
            "ZIPEDGE_JOB_HEARTBEAT_S": "3",
            "ZIPEDGE_JOB_SWEEP_S": "2",
            "ZIPEDGE_JOB_RETRY_DELAY_S": "1",
            "ZIPEDGE_LOCK_TTL_S": "3",
            "AWS_ENDPOINT_URL": self.seaweedfs.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.seaweedfs.access_key,
            "AWS_SECRET_ACCESS_KEY": self.seaweedfs.secret_key,
            "AWS_REGION": self.seaweedfs.region,
            **extra,
        }

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}-{len(self.processes)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def slow_s3(self, delay_ms: int = 25) -> str:
        """A delaying proxy to SeaweedFS (the 'far away region' of the benchmark)."""
        port = free_port()
        upstream = self.seaweedfs.endpoint_url.rsplit(":", 1)[1]
        self.spawn(
            "proxy",
            [
                "-m",
                "bench.delay_proxy",
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                f"127.0.0.1:{upstream}",
                "--delay-ms",
                str(delay_ms),
            ],
            {},
        )
        wait_port(port)
        return f"http://127.0.0.1:{port}"

    def worker(self, **extra: str) -> subprocess.Popen[bytes]:
        return self.spawn("worker", ["-m", "service", "worker", "--concurrency", "2"], self.env(**extra))

    async def cache_keys(self) -> list[str]:
        listed = await self.client.list_objects_v2(Bucket=self.cache_bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    async def uploads(self) -> list[Any]:
        listed = await self.client.list_multipart_uploads(Bucket=self.cache_bucket)
        return list(listed.get("Uploads", []))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
async def jobs(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Jobs]:
    redis.Redis.from_url(redis_server.url).flushall()
    cache_bucket = f"c-{uuid.uuid4().hex[:20]}"
    seaweedfs.create_bucket(cache_bucket)
    objects = {f"2025/01/0{1 + i % 3}/CAR{i:03d}.jpg": os.urandom(64 * 1024 + i) for i in range(60)}
    semaphore = asyncio.Semaphore(16)

    async def put(key: str, data: bytes) -> None:
        async with semaphore:
            await s3_client.put_object(Bucket=s3_bucket, Key=f"photos/{key}", Body=data)

    await asyncio.gather(*(put(k, v) for k, v in objects.items()))
    state = Jobs(seaweedfs, s3_client, s3_bucket, cache_bucket, redis_server.url, objects, tmp_path)
    try:
        yield state
    finally:
        state.stop()


@pytest.fixture
def service(jobs: Jobs) -> Iterator[str]:
    with serve(create_app(Settings.from_env(jobs.env()))) as url:
        yield url


async def poll(client: httpx.AsyncClient, url: str, until: Any, limit_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        job: dict[str, Any] = (await client.get(url)).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.1)


async def test_job_lifecycle_with_a_worker(jobs: Jobs, service: str) -> None:
    jobs.worker()
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        first = await client.get("/v1/zip", params=BIG)
        second = await client.post("/v1/jobs", json=BIG)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] == second.json()["id"]  # one job for one archive
        job = await poll(client, first.json()["status_url"], lambda j: j["status"] in ("ready", "failed"))
        assert job["status"] == "ready", job
        assert job["progress"] == 1.0 and job["entries_done"] == job["entries_total"] == 60
        archive = await client.get(job["download_url"])
        redirect = await client.get("/v1/zip", params=BIG)
        listed = (await client.get("/v1/jobs")).json()["jobs"]
    assert archive.status_code == 200 and redirect.status_code == 302
    assert [j["id"] for j in listed] == [job["id"]]
    path = jobs.tmp / "job.zip"
    path.write_bytes(archive.content)
    check_archive(path, {k: sha256(v) for k, v in sorted(jobs.objects.items())})
    assert await jobs.uploads() == []


async def test_cancel_a_running_job(jobs: Jobs, service: str) -> None:
    jobs.worker(AWS_ENDPOINT_URL=jobs.slow_s3(), ZIPEDGE_FETCH_CONCURRENCY="1")
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        job = (await client.post("/v1/jobs", json=BIG)).json()
        await poll(client, job["status_url"], lambda j: j["status"] == "running" and j["bytes_done"] > 0)
        cancelled = await client.delete(job["status_url"])
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        final = await poll(client, job["status_url"], lambda j: j["status"] != "running", limit_s=10)
        assert final["status"] == "cancelled"
        deadline = time.monotonic() + 20
        while await jobs.uploads():  # the worker aborts its upload as the task is cancelled
            assert time.monotonic() < deadline, "multipart upload left behind"
            await asyncio.sleep(0.1)
    assert await jobs.cache_keys() == []


async def test_a_killed_worker_loses_nothing(jobs: Jobs, service: str) -> None:
    slow = jobs.slow_s3()
    doomed = jobs.worker(AWS_ENDPOINT_URL=slow, ZIPEDGE_FETCH_CONCURRENCY="1")
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        job = (await client.post("/v1/jobs", json=BIG)).json()
        await poll(client, job["status_url"], lambda j: j["status"] == "running" and j["bytes_done"] > 0)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        jobs.worker(AWS_ENDPOINT_URL=slow, ZIPEDGE_FETCH_CONCURRENCY="8")
        final = await poll(
            client, job["status_url"], lambda j: j["status"] in ("ready", "failed"), limit_s=90
        )
        assert final["status"] == "ready", final
        assert final["attempts"] >= 2
        archive = await client.get(final["download_url"])
    path = jobs.tmp / "recovered.zip"
    path.write_bytes(archive.content)
    check_archive(path, {k: sha256(v) for k, v in sorted(jobs.objects.items())})


async def test_a_failing_source_exhausts_retries(jobs: Jobs, service: str, tmp_path: Path) -> None:
    """An HTTP origin that answers HEAD but fails every GET with 503."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    gets = 0

    async def photo(request: Request) -> Response:
        nonlocal gets
        if request.method == "HEAD":
            return Response(headers={"content-length": "1000", "etag": '"v1"'})
        gets += 1
        return Response("busy", status_code=503)

    origin = Starlette(routes=[Route("/p.jpg", photo, methods=["GET", "HEAD"])])
    with serve(origin) as origin_url:
        # The origin's own port only: a bare host would mean port 80.
        allow = {
            "ZIPEDGE_HTTP_ALLOW": origin_url.removeprefix("http://"),
            "ZIPEDGE_HTTP_ALLOW_PRIVATE": "true",
        }
        with serve(create_app(Settings.from_env(jobs.env(**allow)))) as url:
            jobs.worker(**allow)
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                created = await client.post(
                    "/v1/archives", json={"entries": [{"url": f"{origin_url}/p.jpg"}]}
                )
                assert created.status_code == 201, created.text
                job = (await client.post("/v1/jobs", json={"archive": created.json()["id"]})).json()
                final = await poll(
                    client, job["status_url"], lambda j: j["status"] in ("ready", "failed"), 90
                )
    assert final["status"] == "failed" and final["attempts"] == 3
    assert "503" in final["error"] or "unavailable" in final["error"].lower(), final["error"]
    assert gets >= 3
    assert await jobs.cache_keys() == [] and await jobs.uploads() == []


@pytest.mark.parametrize("repeat", range(3))
async def test_a_cancel_half_way_never_reads_cancelled_over_a_committed_archive(
    jobs: Jobs, tmp_path: Path, repeat: int
) -> None:
    """The slowed-down storage of a real deployment: 60 x 1 MiB through a delaying proxy, a
    real worker process, DELETE at about half the bytes. Whatever the ordering, `cancelled`
    means no cache object and no multipart upload left, and `ready` means the object."""
    semaphore = asyncio.Semaphore(16)
    day = f"2025/02/{1 + repeat:02d}"

    async def put(i: int) -> None:
        async with semaphore:
            await jobs.client.put_object(
                Bucket=jobs.source_bucket, Key=f"photos/{day}/BIG{i:03d}.jpg", Body=os.urandom(1 << 20)
            )

    await asyncio.gather(*(put(i) for i in range(60)))
    slow = jobs.slow_s3(delay_ms=30)
    jobs.worker(AWS_ENDPOINT_URL=slow)
    params = {"from": f"2025-02-{1 + repeat:02d}", "to": f"2025-02-{1 + repeat:02d}"}
    with serve(create_app(Settings.from_env(jobs.env()))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            accepted = await client.get("/v1/zip", params=params)
            assert accepted.status_code == 202
            job = accepted.json()
            running = await poll(
                client, job["status_url"], lambda j: j["status"] != "queued" and j["bytes_done"] > 0
            )
            while running["status"] == "running" and running["bytes_done"] < running["bytes_total"] // 2:
                running = (await client.get(job["status_url"])).json()
                await asyncio.sleep(0.05)
            cancel = await client.delete(job["status_url"])
            final = (await client.get(job["status_url"])).json()
    keys = await jobs.cache_keys()
    if cancel.status_code == 409:  # committed before the cancel: ready, and says so
        assert cancel.json()["error"]["code"] == "job_ready"
        assert final["status"] == "ready" and len(keys) == 1
    else:
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        assert final["status"] == "cancelled"
        assert keys == [] and await jobs.uploads() == []
