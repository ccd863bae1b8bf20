"""The service over a real S3 server (SeaweedFS, SigV4 enforced): the same API, the
same archives, concurrency against a real object store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.stack.seaweedfs import SeaweedFS
from tests.servers import serve
from tests.zipcheck import check_archive, descriptor_flags, sha256

pytestmark = pytest.mark.integration


def settings_for(seaweedfs: SeaweedFS, bucket: str, tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"s3://{bucket}/gate7",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
            "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
            "AWS_REGION": seaweedfs.region,
            **env,
        }
    )


async def upload(client: Any, bucket: str, objects: dict[str, bytes]) -> None:
    semaphore = asyncio.Semaphore(16)

    async def put(key: str, data: bytes) -> None:
        async with semaphore:
            await client.put_object(Bucket=bucket, Key=f"gate7/{key}", Body=data)

    await asyncio.gather(*(put(k, v) for k, v in objects.items()))


@pytest.fixture
async def objects(s3_client: Any, s3_bucket: str) -> dict[str, bytes]:
    files = {
        f"2025/01/{day:02d}/MH12AB{day}{i:03d}-{i:02d}0000.jpg": os.urandom(20_000 + 997 * i)
        for day in (1, 2, 3)
        for i in range(30)
    }
    files["2025/01/02/big/KA01Z9999-235959.jpg"] = os.urandom(3 * 1024 * 1024 + 11)
    await upload(s3_client, s3_bucket, files)
    # Outside the range and outside the prefix: must never appear.
    await s3_client.put_object(Bucket=s3_bucket, Key="gate7/2025/01/04/x.jpg", Body=b"x")
    await s3_client.put_object(Bucket=s3_bucket, Key="other/2025/01/02/y.jpg", Body=b"y")
    return files


async def test_date_range_from_s3(
    seaweedfs: SeaweedFS, s3_bucket: str, objects: dict[str, bytes], tmp_path: Path
) -> None:
    app = create_app(settings_for(seaweedfs, s3_bucket, tmp_path, ZIPEDGE_FETCH_CONCURRENCY="8"))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.get("/v1/zip", params={"from": "2025-01-01", "to": "2025-01-03"})
            ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    path = tmp_path / "s3.zip"
    path.write_bytes(response.content)
    check_archive(path, {k: sha256(objects[k]) for k in sorted(objects)})


async def test_posted_keys_from_s3_and_a_deleted_object_cuts_the_stream(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, objects: dict[str, bytes], tmp_path: Path
) -> None:
    keys = sorted(objects)[:10]
    app = create_app(settings_for(seaweedfs, s3_bucket, tmp_path))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            created = await client.post("/v1/archives", json={"entries": [{"key": k} for k in keys]})
            assert created.status_code == 201, created.text
            doc = created.json()
            whole = await client.get(doc["url"])
            missing = await client.post("/v1/archives", json={"entries": [{"key": "2025/01/09/none.jpg"}]})
            await s3_client.delete_object(Bucket=s3_bucket, Key=f"gate7/{keys[5]}")
            received = 0
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream("GET", doc["url"]) as response:
                    async for chunk in response.aiter_raw():
                        received += len(chunk)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "object_not_found"
    path = tmp_path / "posted.zip"
    path.write_bytes(whole.content)
    check_archive(path, {k: sha256(objects[k]) for k in keys})
    assert 0 < received < doc["size"]


async def test_s3_down_is_a_503(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": "s3://zipedge/x",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp_path),
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "b",
            "AWS_REGION": "us-east-1",
        }
    )
    app = create_app(settings)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            response = await client.get("/v1/zip", params={"from": "2025-01-01", "to": "2025-01-01"})
            ready = await client.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "source_unavailable"
    assert ready.status_code == 503


async def test_days_come_from_the_listings_archives_use(
    seaweedfs: SeaweedFS, s3_bucket: str, objects: dict[str, bytes], tmp_path: Path
) -> None:
    """`/v1/days` lists each day once, into the cached listings; the download after it
    lists nothing again, and the archive it announced is the one sent."""
    app = create_app(settings_for(seaweedfs, s3_bucket, tmp_path))
    params = {"from": "2025-01-01", "to": "2025-01-04"}
    with serve(app) as url:
        stats = app.state.services.runtime.listings.stats  # built in the app's lifespan
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            body = (await client.get("/v1/days", params=params)).json()
            listed = stats.source_lists
            head = await client.head("/v1/zip", params=params)
    assert listed == 4 and stats.source_lists == listed
    per_day = {d["day"]: (d["objects"], d["bytes"]) for d in body["days"]}
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        keys = [k for k in objects if k.startswith(day.replace("-", "/"))]
        assert per_day[day] == (len(keys), sum(len(objects[k]) for k in keys))
    assert per_day["2025-01-04"] == (1, 1)
    assert body["archive"]["size"] == int(head.headers["content-length"])
    assert f'"{body["archive"]["id"]}"' == head.headers["etag"]


async def test_what_one_process_learns_every_process_uses(
    seaweedfs: SeaweedFS, s3_bucket: str, objects: dict[str, bytes], tmp_path: Path, redis_server: Any
) -> None:
    """Two service processes on one Redis, no cache: the first archive of a day (streamed
    by one) has data descriptors; it taught the shared object index every CRC and bumped
    the day, so the next archive, from the other process, has none, and seeks: a range
    of it reads only the objects it overlaps."""
    import redis

    from tests.zipcheck import descriptor_flags

    redis.Redis.from_url(redis_server.url).flushall()
    params = {"from": "2025-01-01", "to": "2025-01-01"}
    one = create_app(settings_for(seaweedfs, s3_bucket, tmp_path / "a", ZIPEDGE_REDIS_URL=redis_server.url))
    two = create_app(settings_for(seaweedfs, s3_bucket, tmp_path / "b", ZIPEDGE_REDIS_URL=redis_server.url))
    expected = {k: sha256(v) for k, v in sorted(objects.items()) if k.startswith("2025/01/01/")}
    with serve(one) as url_one, serve(two) as url_two:
        async with httpx.AsyncClient(timeout=60) as client:
            first = await client.get(f"{url_one}/v1/zip", params=params)
            await client.get(f"{url_two}/v1/zip", params=params)  # day cached there before the bump
            await asyncio.sleep(0.3)  # another process's bump is seen within a quarter second
            second = await client.get(f"{url_two}/v1/zip", params=params)
            size = len(second.content)
            part = await client.get(
                f"{url_two}/v1/zip", params=params, headers={"Range": f"bytes={size - 5000}-"}
            )
    paths = []
    for name, response in (("first", first), ("second", second)):
        paths.append(tmp_path / f"{name}.zip")
        paths[-1].write_bytes(response.content)
        check_archive(paths[-1], expected)
    assert all(descriptor_flags(paths[0])) and not any(descriptor_flags(paths[1]))
    assert part.status_code == 206 and part.content == second.content[-5000:]


async def test_storage_crcs_of_posted_keys_reach_the_date_range_archive(
    seaweedfs: SeaweedFS, s3_bucket: str, s3_client: Any, tmp_path: Path
) -> None:
    """Objects uploaded with a full-object CRC-32 (ChecksumAlgorithm=CRC32): posting some
    of them stores their CRCs in the object index, so the date-range archive of their day,
    never streamed before, has no data descriptor for them (local headers suffice)."""
    day = {f"2025/01/05/KA01CRC{i:02d}-120000.jpg": os.urandom(5_000 + 313 * i) for i in range(6)}
    for key, data in day.items():
        await s3_client.put_object(Bucket=s3_bucket, Key=f"gate7/{key}", Body=data, ChecksumAlgorithm="CRC32")
    head = await s3_client.head_object(
        Bucket=s3_bucket, Key=f"gate7/{sorted(day)[0]}", ChecksumMode="ENABLED"
    )
    assert head.get("ChecksumCRC32")  # storage kept it: what this test is about
    params = {"from": "2025-01-05", "to": "2025-01-05"}
    posted = sorted(day)[:4]
    app = create_app(settings_for(seaweedfs, s3_bucket, tmp_path))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            before = (await client.get("/v1/days", params=params)).json()["archive"]  # lists the day
            created = await client.post("/v1/archives", json={"entries": [{"key": k} for k in posted]})
            assert created.status_code == 201, created.text
            again = await client.post("/v1/archives", json={"entries": [{"key": k} for k in posted]})
            after = (await client.get("/v1/days", params=params)).json()["archive"]
            response = await client.get("/v1/zip", params=params)
    assert again.json()["id"] == created.json()["id"]
    assert response.status_code == 200 and response.headers["etag"] == f'"{after["id"]}"'
    # The day's listing was cached without CRCs; the post taught four and bumped it.
    assert before["size"] - after["size"] == 16 * len(posted)  # four data descriptors fewer
    path = tmp_path / "day.zip"
    path.write_bytes(response.content)
    check_archive(path, {k: sha256(day[k]) for k in sorted(day)})
    flags = dict(zip(sorted(day), descriptor_flags(path), strict=True))
    assert flags == {k: k not in posted for k in sorted(day)}
