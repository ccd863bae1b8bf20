"""Uploads against real SeaweedFS (SigV4 enforced) and redis-server: presigned PUTs that
storage itself holds to size, type, CRC-32, If-None-Match and expiry; completion that
files each photo once under its day, in the very next archive, in every process."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.identity import UNAUTHENTICATED
from service.janitor import run_janitor
from service.runtime import open_runtime
from service.settings import Settings
from service.stack.redis import RedisServer
from service.stack.seaweedfs import SeaweedFS
from service.uploads import uploads_of
from tests.servers import serve

pytestmark = pytest.mark.integration

DAY = "2025-01-05"
PHOTO = b"\xff\xd8" + bytes(range(256)) * 200


def settings_for(
    seaweedfs: SeaweedFS, bucket: str, tmp_path: Path, redis: RedisServer | None, **env: str
) -> Settings:
    return Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"s3://{bucket}/gate7",
            "ZIPEDGE_CACHE": f"s3://{bucket}/cache",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "ZIPEDGE_REDIS_URL": redis.url if redis else "",
            "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
            "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
            "AWS_REGION": seaweedfs.region,
            **env,
        }
    )


def announce(body: bytes = PHOTO, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "filename": "MH12AB1234",
        "content_type": "image/jpeg",
        "size": len(body),
        "crc32": zlib.crc32(body),
        "taken_at": f"{DAY}T08:30:15Z",
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


async def archive_names(client: httpx.AsyncClient, day: str = DAY) -> dict[str, zipfile.ZipInfo]:
    response = await client.get("/v1/zip", params={"from": day, "to": day}, follow_redirects=True)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        return {info.filename: info for info in archive.infolist()}


async def storage_put(url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    """What a camera or a browser does with a ticket: one PUT, straight to storage."""
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.put(url, content=content, headers=headers)


async def day_keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    listed = await s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


async def test_the_whole_flow_in_every_process(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    await s3_client.put_object(Bucket=s3_bucket, Key="gate7/2025/01/05/KA01-070000.jpg", Body=b"earlier")
    one = create_app(settings_for(seaweedfs, s3_bucket, tmp_path / "a", redis_server))
    two = create_app(settings_for(seaweedfs, s3_bucket, tmp_path / "b", redis_server))
    with serve(one) as url_one, serve(two) as url_two:
        async with (
            httpx.AsyncClient(base_url=url_one, timeout=30) as a,
            httpx.AsyncClient(base_url=url_two, timeout=30) as b,
        ):
            # Both processes have the (settled) day cached before the upload.
            assert (
                set(await archive_names(a)) == set(await archive_names(b)) == {"2025/01/05/KA01-070000.jpg"}
            )
            ticket = (await a.post("/v1/uploads", json=announce())).json()
            assert ticket["method"] == "PUT" and ticket["url"].startswith(seaweedfs.endpoint_url)
            assert "/_staging/" in ticket["url"]
            signed = httpx.URL(ticket["url"]).params["X-Amz-SignedHeaders"]
            assert signed == "content-length;content-type;host;if-none-match;x-amz-checksum-crc32"
            # Straight to storage, with exactly the headers handed out.
            put = await storage_put(ticket["url"], content=PHOTO, headers=ticket["headers"])
            assert put.status_code == 200, put.text
            # Uploaded but not completed: in no archive, not even one that names its key.
            assert "2025/01/05/MH12AB1234.jpg" not in await archive_names(b)
            posted = await a.post("/v1/archives", json={"entries": [{"key": f"_staging/{ticket['id']}"}]})
            assert posted.status_code == 400 and posted.json()["error"]["code"] == "invalid_key"
            done = await b.post(f"/v1/uploads/{ticket['id']}/complete")
            assert done.status_code == 200, done.text
            assert done.json()["key"] == "2025/01/05/MH12AB1234.jpg"
            # The very next archive of its day, in the process that completed it and in the
            # other one (which hears the bump on its Redis channel).
            for client in (b, a):
                names = await archive_names(client)
                assert set(names) == {"2025/01/05/KA01-070000.jpg", "2025/01/05/MH12AB1234.jpg"}
                member = names["2025/01/05/MH12AB1234.jpg"]
                assert member.CRC == zlib.crc32(PHOTO)
                assert not member.flag_bits & 0x08  # its CRC came from the index: no descriptor
            again = await b.post(f"/v1/uploads/{ticket['id']}/complete")
            assert again.json() == done.json()
            assert (await a.get(f"/v1/uploads/{ticket['id']}")).json()["status"] == "completed"
    assert await day_keys(s3_client, s3_bucket, "gate7/_staging/") == []
    head = await s3_client.head_object(Bucket=s3_bucket, Key="gate7/2025/01/05/MH12AB1234.jpg")
    assert head["ContentType"] == "image/jpeg" and head["Metadata"]["zipedge-upload"] == ticket["id"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (PHOTO[:-1], {"Content-Length": str(len(PHOTO) - 1)}, 403),  # size: the signature
        (PHOTO, {"Content-Type": "image/png"}, 403),  # type: the signature
        (PHOTO[:-1] + b"X", {}, 400),  # CRC: storage computes it and refuses (BadDigest)
        (PHOTO, {"If-None-Match": ""}, 403),  # the condition is signed too
    ],
    ids=["size", "type", "crc", "no-if-none-match"],
)
async def test_storage_refuses_a_body_not_as_signed(
    seaweedfs: SeaweedFS,
    s3_bucket: str,
    s3_client: Any,
    tmp_path: Path,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    with serve(create_app(settings_for(seaweedfs, s3_bucket, tmp_path, None))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            ticket = (await client.post("/v1/uploads", json=announce())).json()
            sent = {**ticket["headers"], **headers}
            sent = {k: v for k, v in sent.items() if v}
            put = await storage_put(ticket["url"], content=body, headers=sent)
            assert put.status_code == status, put.text
            done = await client.post(f"/v1/uploads/{ticket['id']}/complete")
            assert done.status_code == 409 and done.json()["error"]["code"] == "upload_incomplete"


async def test_complete_catches_what_storage_let_through(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """A store that does not check the CRC (or a body written with other credentials):
    complete compares what storage holds, fails clearly and removes the staged object."""
    with serve(create_app(settings_for(seaweedfs, s3_bucket, tmp_path, None))) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for wrong in (PHOTO[:-1] + b"X", PHOTO[:-1]):
                ticket = (await client.post("/v1/uploads", json=announce())).json()
                key = f"gate7/_staging/{ticket['id']}"
                await s3_client.put_object(Bucket=s3_bucket, Key=key, Body=wrong, ContentType="image/jpeg")
                done = await client.post(f"/v1/uploads/{ticket['id']}/complete")
                assert done.status_code == 422 and done.json()["error"]["code"] == "upload_mismatch"
                assert await day_keys(s3_client, s3_bucket, key) == []
            # Without a declared CRC it is computed by reading the object once.
            ticket = (await client.post("/v1/uploads", json=announce(crc32=None))).json()
            assert "x-amz-checksum-crc32" not in ticket["headers"]
            put = await storage_put(ticket["url"], content=PHOTO, headers=ticket["headers"])
            assert put.status_code == 200
            done = await client.post(f"/v1/uploads/{ticket['id']}/complete")
            assert done.status_code == 200 and done.json()["crc32"] == zlib.crc32(PHOTO)


async def test_an_expired_url_is_refused(seaweedfs: SeaweedFS, s3_bucket: str, tmp_path: Path) -> None:
    settings = settings_for(seaweedfs, s3_bucket, tmp_path, None, ZIPEDGE_UPLOAD_TTL_S="1")
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient() as client:
            ticket = (await client.post(f"{url}/v1/uploads", json=announce())).json()
        await asyncio.sleep(2.2)
        put = await storage_put(ticket["url"], content=PHOTO, headers=ticket["headers"])
        assert put.status_code == 403 and "expired" in put.text.lower()


async def test_racing_completes_give_one_object_and_a_clash_a_suffix(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    one = create_app(settings_for(seaweedfs, s3_bucket, tmp_path / "a", redis_server))
    two = create_app(settings_for(seaweedfs, s3_bucket, tmp_path / "b", redis_server))
    with serve(one) as url_one, serve(two) as url_two:
        async with httpx.AsyncClient(timeout=60) as client:
            tickets = [(await client.post(f"{url_one}/v1/uploads", json=announce())).json() for _ in range(2)]
            for ticket in tickets:
                put = await storage_put(ticket["url"], content=PHOTO, headers=ticket["headers"])
                assert put.status_code == 200
            answers = await asyncio.gather(
                *(
                    client.post(f"{base}/v1/uploads/{t['id']}/complete")
                    for t in tickets
                    for base in (url_one, url_two, url_one, url_two)
                )
            )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    keys = {a.json()["id"]: a.json()["key"] for a in answers}
    assert len(keys) == 2 and len({a.json()["key"] for a in answers}) == 2
    assert "2025/01/05/MH12AB1234.jpg" in keys.values()
    listed = await day_keys(s3_client, s3_bucket, "gate7/2025/01/05/")
    assert listed == sorted(f"gate7/{k}" for k in keys.values())  # one object per upload


async def test_the_janitor_removes_abandoned_uploads_and_stale_builds(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = settings_for(seaweedfs, s3_bucket, tmp_path, redis_server, ZIPEDGE_UPLOAD_GRACE_S="3600")
    async with open_runtime(settings) as runtime:
        uploads = uploads_of(runtime)
        tickets = []
        for _ in range(2):
            ticket = await uploads.create(UNAUTHENTICATED, announce(), body_url=lambda i, e: "")
            assert (await storage_put(ticket.url, content=PHOTO, headers=ticket.headers)).status_code == 200
            tickets.append(ticket)
        old, fresh = tickets
        # The first one was made two hours ago.
        await runtime.pending.delete(old.record.id)
        await runtime.pending.put(replace(old.record, created_at=time.time() - 7200))
        build = await s3_client.create_multipart_upload(Bucket=s3_bucket, Key="cache/0123.zip")
        later = datetime.now(UTC) + timedelta(minutes=10)
        # Two janitors at once: each record is removed by exactly one.
        both = await asyncio.gather(
            run_janitor(runtime, uploads, now=later - timedelta(minutes=10)),
            run_janitor(runtime, uploads, now=later - timedelta(minutes=10)),
        )
        lines = [line for found in both for line in found]
        assert len([line for line in lines if old.record.id in line]) == 1, lines
        assert await runtime.pending.get(old.record.id) is None
        assert await runtime.pending.get(fresh.record.id) is not None
        staged = await day_keys(s3_client, s3_bucket, "gate7/_staging/")
        assert staged == [f"gate7/_staging/{fresh.record.id}"]
        assert not [line for line in lines if "multipart" in line]  # the build is young
        lines = await run_janitor(runtime, uploads, now=later)
        assert any("aborted a stale multipart upload" in line for line in lines), lines
    uploads_left = await s3_client.list_multipart_uploads(Bucket=s3_bucket, Prefix="cache/")
    assert build["UploadId"] not in [u["UploadId"] for u in uploads_left.get("Uploads", [])]


async def test_a_photo_written_behind_zipedges_back_shows_within_the_bound(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = settings_for(seaweedfs, s3_bucket, tmp_path, redis_server, ZIPEDGE_LISTING_MAX_STALE_S="2")
    await s3_client.put_object(Bucket=s3_bucket, Key="gate7/2025/01/05/A.jpg", Body=b"a")
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert set(await archive_names(client)) == {"2025/01/05/A.jpg"}
            await s3_client.put_object(Bucket=s3_bucket, Key="gate7/2025/01/05/B.jpg", Body=b"b")
            written = time.monotonic()
            while "2025/01/05/B.jpg" not in await archive_names(client):
                assert time.monotonic() - written < 2 + 3, "the direct write stayed invisible"
                await asyncio.sleep(0.2)
