"""`zipedge serve --workers N`: every core serving one port. More than one process needs
Redis (refused without it, with the reason); /metrics adds up every process's counters,
whichever answers; SIGTERM stops every process, and an archive whose download was cut by
the stop is never left half-cached: the cache holds only complete archives and no
multipart upload is left behind."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from service.cli import default_workers, main
from service.settings import Settings
from service.stack.ports import free_port
from service.stack.redis import RedisServer
from service.stack.seaweedfs import SeaweedFS

ROOT = Path(__file__).resolve().parent.parent
#: Hang guards, never timing assertions.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 60.0
KiB = 1024


def test_more_than_one_worker_needs_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZIPEDGE_SOURCE", f"file://{tmp_path}")
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers 2 needs ZIPEDGE_REDIS_URL" in err
    assert "job" in err and "--workers 1" in err


def test_workers_default_to_every_core_with_redis_and_one_without(tmp_path: Path) -> None:
    embedded = Settings.from_env({"ZIPEDGE_SOURCE": f"file://{tmp_path}"}, cwd=tmp_path)
    shared = Settings.from_env(
        {"ZIPEDGE_SOURCE": f"file://{tmp_path}", "ZIPEDGE_REDIS_URL": "redis://127.0.0.1:6379/0"},
        cwd=tmp_path,
    )
    assert default_workers(embedded) == 1
    assert default_workers(shared) == len(os.sched_getaffinity(0))


def _requests_of(metrics: str, route: str) -> float:
    found = re.findall(rf'^zipedge_requests_total\{{[^}}]*route="{route}"[^}}]*\}} (\S+)$', metrics, re.M)
    return sum(float(v) for v in found)


@pytest.mark.integration
async def test_two_workers_share_metrics_and_stop_on_sigterm_leaving_no_partial_archive(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, private_redis_server: RedisServer, tmp_path: Path
) -> None:
    # One small day (archived completely before the stop) and two large ones (cut by it).
    for day, count, size in (
        ("2025/01/01", 4, 20 * KiB),
        ("2025/01/02", 40, 256 * KiB),
        ("2025/01/03", 40, 256 * KiB),
    ):
        for i in range(count):
            body = os.urandom(size)
            await s3_client.put_object(Bucket=s3_bucket, Key=f"photos/{day}/p{i:03d}.jpg", Body=body)
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "ZIPEDGE_SOURCE": f"s3://{s3_bucket}/photos",
        "ZIPEDGE_CACHE": f"s3://{s3_bucket}/cache",
        "ZIPEDGE_REDIS_URL": private_redis_server.url,
        "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
        "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
        "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
        "AWS_REGION": seaweedfs.region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", "2",
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    slow: asyncio.subprocess.Process | None = None
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            deadline = time.monotonic() + START_DEADLINE_S
            while True:
                assert server.returncode is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                try:
                    if (await client.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            workers = [
                p for p in psutil.Process(server.pid).children() if "spawn_main" in " ".join(p.cmdline())
            ]
            assert len(workers) == 2, [p.cmdline() for p in workers]

            # Counted by whichever process answered, added up by whichever is scraped.
            for _ in range(12):
                async with httpx.AsyncClient() as fresh:  # a new connection each: any worker
                    assert (await fresh.get(f"{base}/healthz")).status_code == 200
            for _ in range(3):
                assert _requests_of((await client.get(f"{base}/metrics")).text, "healthz") == 12
            tasks = re.findall(
                r'^zipedge_event_loop_tasks\{pid="(\d+)"\} \S+$',
                (await client.get(f"{base}/metrics")).text,
                re.M,
            )
            assert {int(pid) for pid in tasks} == {p.pid for p in workers}

            small = f"{base}/v1/zip?from=2025-01-01&to=2025-01-01"
            assert (await client.get(small)).status_code == 200
            while (await client.head(small)).status_code != 302:  # its tee committed
                assert time.monotonic() < deadline + START_DEADLINE_S, log.read_text()
                await asyncio.sleep(0.1)

        # A download far slower than the stop's grace period: cut by it, its tee with it.
        slow = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--limit-rate", "400k", "-o", str(tmp_path / "cut.zip"),
            "-w", "%{size_download} %header{content-length}",
            f"{base}/v1/zip?from=2025-01-02&to=2025-01-03",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        while (tmp_path / "cut.zip").stat().st_size < 512 * KiB if (tmp_path / "cut.zip").exists() else True:
            assert slow.returncode is None
            await asyncio.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(server.wait(), STOP_DEADLINE_S)
        out_text, _ = await asyncio.wait_for(slow.communicate(), STOP_DEADLINE_S)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        if slow is not None and slow.returncode is None:
            slow.kill()
            await slow.wait()
    text = log.read_text()
    assert code == 0, text
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in workers), text
    assert text.count("Application shutdown complete") == 2, text
    assert "dropped: shutting down" in text, text  # the cut download's tee, aborted
    # uvicorn logs the download it cut when the grace period ran out; nothing else failed.
    assert text.count("Traceback") == text.count("CancelledError: Task cancelled, timeout graceful"), text
    received, promised = (int(v) for v in out_text.decode().split())
    assert 0 < received < promised  # the download was cut, and the client can tell

    listed = await s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="cache/")
    cached = [o for o in listed.get("Contents", []) if o["Key"].endswith(".zip")]
    assert cached, "the small day's archive was committed before the stop"
    for obj in cached:  # whatever is cached is a whole archive
        head = await s3_client.head_object(Bucket=s3_bucket, Key=obj["Key"])
        assert int(head["Metadata"]["zipedge-size"]) == obj["Size"]
        body = await (await s3_client.get_object(Bucket=s3_bucket, Key=obj["Key"]))["Body"].read()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.testzip() is None
    uploads = await s3_client.list_multipart_uploads(Bucket=s3_bucket, Prefix="cache/")
    assert not uploads.get("Uploads"), uploads["Uploads"]
