"""Uploads in the embedded default (folder storage, no Redis): the body goes to the
service's own signed `PUT /v1/uploads/{id}/body`, checked while it is written; the photo
is in the next archive of its day; `zipedge janitor` sweeps what was abandoned."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.servers import serve

PHOTO = b"\xff\xd8" + os.urandom(300_000)


def settings_for(tmp_path: Path, **env: str) -> Settings:
    (tmp_path / "photos").mkdir(exist_ok=True)
    return Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            **env,
        }
    )


def staged(tmp_path: Path) -> list[str]:
    folder = tmp_path / "photos" / "_staging"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def announce(**changes: Any) -> dict[str, Any]:
    doc = {
        "filename": "KA01Z9999",
        "content_type": "image/jpeg",
        "size": len(PHOTO),
        "crc32": zlib.crc32(PHOTO),
    }
    doc["taken_at"] = "2025-02-01T23:59:59Z"
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


async def test_the_body_goes_through_the_service_and_into_the_day(tmp_path: Path) -> None:
    with serve(create_app(settings_for(tmp_path))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            ticket = (await client.post("/v1/uploads", json=announce())).json()
            assert ticket["url"].startswith(f"{url}/v1/uploads/{ticket['id']}/body?expires=")
            put = await client.put(ticket["url"], content=PHOTO, headers=ticket["headers"])
            assert put.status_code == 200, put.text
            again = await client.put(ticket["url"], content=PHOTO, headers=ticket["headers"])
            assert again.status_code == 412
            zip_url = "/v1/zip?from=2025-02-01&to=2025-02-01"
            assert (await client.get(zip_url)).status_code == 404  # not completed: in no archive
            posted = await client.post(
                "/v1/archives", json={"entries": [{"key": f"_staging/{ticket['id']}"}]}
            )
            assert posted.status_code == 400 and posted.json()["error"]["code"] == "invalid_key"
            done = await client.post(ticket["complete_url"])
            assert done.status_code == 200 and done.json()["key"] == "2025/02/01/KA01Z9999.jpg"
            archive = await client.get(zip_url)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        assert opened.namelist() == ["2025/02/01/KA01Z9999.jpg"]
        assert opened.read("2025/02/01/KA01Z9999.jpg") == PHOTO
        assert not opened.infolist()[0].flag_bits & 0x08  # the CRC was known: no descriptor
    assert staged(tmp_path) == []


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (PHOTO[:-1], {}),  # shorter than announced
        (PHOTO + b"x", {}),  # longer
        (PHOTO[:-1] + b"X", {}),  # another CRC
        (PHOTO, {"Content-Type": "image/png"}),
        (PHOTO, {"x-amz-checksum-crc32": "AAAAAA=="}),
    ],
    ids=["short", "long", "crc", "type", "crc-header"],
)
async def test_a_body_not_as_announced_is_refused_and_not_kept(
    tmp_path: Path, body: bytes, headers: dict[str, str]
) -> None:
    with serve(create_app(settings_for(tmp_path))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            ticket = (await client.post("/v1/uploads", json=announce())).json()
            sent = {**ticket["headers"], **headers, "Content-Length": str(len(body))}
            put = await client.put(ticket["url"], content=body, headers=sent)
            assert put.status_code == 422 and put.json()["error"]["code"] == "upload_mismatch"
            done = await client.post(ticket["complete_url"])
            assert done.status_code == 409
    assert staged(tmp_path) == []


async def test_an_expired_or_tampered_link_is_refused(tmp_path: Path) -> None:
    with serve(create_app(settings_for(tmp_path, ZIPEDGE_UPLOAD_TTL_S="1"))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            ticket = (await client.post("/v1/uploads", json=announce())).json()
            tampered = ticket["url"].replace("sig=", "sig=x")
            put = await client.put(tampered, content=PHOTO, headers=ticket["headers"])
            assert put.status_code == 403
            await asyncio.sleep(2.2)
            put = await client.put(ticket["url"], content=PHOTO, headers=ticket["headers"])
            assert put.status_code == 403 and put.json()["error"]["code"] == "bad_upload_link"


async def test_delete_abandons_and_the_janitor_command_sweeps(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ZIPEDGE_UPLOAD_GRACE_S="1")
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            gone = (await client.post("/v1/uploads", json=announce())).json()
            await client.put(gone["url"], content=PHOTO, headers=gone["headers"])
            assert (await client.delete(gone["status_url"])).status_code == 204
            assert (await client.get(gone["status_url"])).status_code == 404
            old = (await client.post("/v1/uploads", json=announce())).json()
            await client.put(old["url"], content=PHOTO, headers=old["headers"])
    await asyncio.sleep(1.5)
    env = {
        **os.environ,
        "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
        "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
        "ZIPEDGE_CACHE": "",
        "ZIPEDGE_UPLOAD_GRACE_S": "1",
    }
    command = [sys.executable, "-m", "service", "janitor"]
    run = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert f"removed abandoned upload {old['id']}" in run.stdout
    assert staged(tmp_path) == []


@pytest.mark.integration
async def test_the_worker_cron_runs_the_same_sweep(tmp_path: Path, redis_server: Any) -> None:
    from dataclasses import replace

    from service.identity import UNAUTHENTICATED
    from service.jobs.saq_queue import JANITOR_CRON, janitor_job
    from service.runtime import open_runtime
    from service.uploads import uploads_of

    assert JANITOR_CRON == "*/5 * * * *"
    settings = settings_for(tmp_path, ZIPEDGE_REDIS_URL=redis_server.url, ZIPEDGE_UPLOAD_GRACE_S="60")
    async with open_runtime(settings) as runtime:
        uploads = uploads_of(runtime)
        old = await uploads.create(UNAUTHENTICATED, announce(), body_url=lambda i, e: "")
        await runtime.pending.delete(old.record.id)
        await runtime.pending.put(replace(old.record, created_at=old.record.created_at - 120))
        fresh = await uploads.create(UNAUTHENTICATED, announce(), body_url=lambda i, e: "")
        ctx: Any = {"runtime": runtime, "uploads": uploads}
        assert await janitor_job(ctx) == {"lines": 1}
        assert await runtime.pending.get(old.record.id) is None
        assert await runtime.pending.get(fresh.record.id) is not None
