"""S3Source against a real SeaweedFS (SigV4 enforced), plus the pure parsing and error
translation logic without a server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import botocore.exceptions
import httpx
import pytest

from service.constants import READ_CHUNK_BYTES, S3_LIST_PAGE
from service.exceptions import (
    DependencyUnavailable,
    InvalidKey,
    ObjectChanged,
    ObjectMissing,
    ObjectNotFound,
    SourceError,
    SourceUnavailable,
)
from service.s3.client import S3
from service.sources.base import Source
from service.sources.s3 import S3Source, _translated, full_object_crc32, normalize_prefix
from service.stack.ports import free_port
from service.stack.seaweedfs import SeaweedFS
from tests.s3_fixtures import s3_for

integration = pytest.mark.integration
DAY = "2025/01/05/"


async def put(client: Any, bucket: str, key: str, body: bytes, **kwargs: Any) -> str:
    resp = await client.put_object(Bucket=bucket, Key=key, Body=body, **kwargs)
    return str(resp["ETag"]).strip('"')


async def read_all(source: S3Source, key: str, **kwargs: Any) -> tuple[bytes, list[int]]:
    parts: list[bytes] = []
    async with contextlib.aclosing(source.read(key, **kwargs)) as chunks:
        async for chunk in chunks:
            parts.append(chunk)
    return b"".join(parts), [len(part) for part in parts]


# --- pure logic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", ""), ("/", ""), ("photos", "photos/"), ("photos/", "photos/"), ("/a/b/", "a/b/")],
)
def test_normalize_prefix(given: str, expected: str) -> None:
    assert normalize_prefix(given) == expected


def _b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ({"ChecksumCRC32": _b64(0xDEADBEEF), "ChecksumType": "FULL_OBJECT", "ETag": '"a-3"'}, 0xDEADBEEF),
        ({"ChecksumCRC32": _b64(0x01020304), "ETag": '"abc"'}, 0x01020304),  # SeaweedFS single PUT
        ({"ChecksumCRC32": _b64(0) + "-2", "ChecksumType": "COMPOSITE", "ETag": '"a-2"'}, None),
        ({"ChecksumCRC32": _b64(7), "ChecksumType": "COMPOSITE", "ETag": '"a-2"'}, None),
        ({"ChecksumCRC32": _b64(7) + "-2", "ETag": '"a-2"'}, None),  # untyped, part count
        ({"ChecksumCRC32": _b64(7), "ETag": '"a-2"'}, None),  # untyped, multipart ETag
        ({"ChecksumCRC32": "not base64!", "ChecksumType": "FULL_OBJECT"}, None),
        ({"ChecksumCRC32": base64.b64encode(b"12345").decode(), "ChecksumType": "FULL_OBJECT"}, None),
        ({"ChecksumCRC32C": _b64(7), "ChecksumType": "FULL_OBJECT"}, None),  # CRC32C is not the ZIP CRC
        ({"ETag": '"abc"'}, None),
    ],
)
def test_full_object_crc32(head: dict[str, str], expected: int | None) -> None:
    assert full_object_crc32(head) == expected


def _client_error(status: int, code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_client_error(404, "NoSuchKey"), ObjectMissing),
        (_client_error(404, "404"), ObjectMissing),
        (_client_error(404, "NoSuchBucket"), SourceError),
        (_client_error(412, "PreconditionFailed"), ObjectChanged),
        (_client_error(416, "InvalidRange"), ObjectChanged),
        (_client_error(403, "AccessDenied"), SourceError),
        (_client_error(403, "SignatureDoesNotMatch"), SourceError),
        (_client_error(500, "InternalError"), SourceUnavailable),
        (_client_error(503, "SlowDown"), SourceUnavailable),
        (_client_error(400, "RequestTimeout"), SourceUnavailable),
        (_client_error(400, "InvalidArgument"), SourceError),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), SourceUnavailable),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), SourceUnavailable),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), SourceUnavailable),
        (botocore.exceptions.IncompleteReadError(actual_bytes=1, expected_bytes=2), SourceUnavailable),
        (botocore.exceptions.ResponseStreamingError(error="reset"), SourceUnavailable),
        (aiohttp.ClientPayloadError("truncated"), SourceUnavailable),
        (TimeoutError(), SourceUnavailable),
        (ConnectionResetError(), SourceUnavailable),
        (botocore.exceptions.NoCredentialsError(), SourceError),
    ],
)
def test_translate(error: Exception, expected: type[SourceError]) -> None:
    with pytest.raises(SourceError) as caught, _translated("read 'k'"):
        raise error
    assert type(caught.value) is expected
    assert caught.value.retryable is (expected is SourceUnavailable)
    assert caught.value.__cause__ is error


def test_translate_stat_missing_is_not_found() -> None:
    with pytest.raises(ObjectNotFound), _translated("stat 'k'", missing=ObjectNotFound):
        raise _client_error(404, "404")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "./a", "a/./b", "a\x00b"])
async def test_bad_keys_are_rejected_before_any_request(key: str) -> None:
    source = S3Source(object(), bucket="b", prefix="photos")  # type: ignore[arg-type]  # never used
    with pytest.raises(InvalidKey):
        await source.stat(key)
    with pytest.raises(InvalidKey):
        async with contextlib.aclosing(source.read(key)) as chunks:
            async for _ in chunks:
                pass


def test_s3source_is_a_source() -> None:
    source: Source = S3Source(object(), bucket="b", prefix="")  # type: ignore[arg-type]
    assert source.prefix == ""  # type: ignore[attr-defined]


# --- against SeaweedFS --------------------------------------------------------------------


@integration
async def test_list_paginates_and_keys_are_relative(s3: S3, s3_bucket: str) -> None:
    count = S3_LIST_PAGE + 150
    sem = asyncio.Semaphore(32)

    async def one(key: str) -> None:
        async with sem:
            await put(s3.client, s3_bucket, key, key.encode())

    keys = [f"{DAY}{i:05d}.jpg" for i in range(count)]
    others = ["photos/2025/01/06/x.jpg", "photos/2025/01/050.jpg", f"other/{DAY}y.jpg", f"{DAY}z.jpg"]
    await asyncio.gather(*(one(f"photos/{k}") for k in keys), *(one(k) for k in others))

    source = S3Source(s3, bucket=s3_bucket, prefix="photos")
    found = await source.list(DAY)
    assert [info.key for info in found] == keys
    assert all(info.size == len(f"photos/{info.key}") for info in found)

    everything = await S3Source(s3, bucket=s3_bucket, prefix="").list("")
    assert len(everything) == count + len(others)


@integration
async def test_list_nested_sorted_with_metadata(s3: S3, s3_bucket: str) -> None:
    bodies = {
        f"{DAY}b.jpg": b"bb",
        f"{DAY}a.jpg": b"a",
        f"{DAY}sub/deeper/c.jpg": b"ccc",
        f"{DAY}A.jpg": b"AAAA",
        f"{DAY}é.jpg": b"e" * 10,
    }
    etags = {k: await put(s3.client, s3_bucket, f"root/{k}", v) for k, v in bodies.items()}
    await put(s3.client, s3_bucket, f"root/{DAY}", b"")  # a console-made "folder" marker
    await put(s3.client, s3_bucket, f"root/{DAY}empty/", b"")

    source = S3Source(s3, bucket=s3_bucket, prefix="/root/")
    found = await source.list(DAY)
    assert [info.key for info in found] == sorted(bodies)
    for info in found:
        head = await s3.client.head_object(Bucket=s3_bucket, Key=f"root/{info.key}")
        assert info.size == len(bodies[info.key])
        assert info.etag == etags[info.key] == hashlib.md5(bodies[info.key]).hexdigest()
        assert info.mtime == int(head["LastModified"].timestamp())
        assert info.crc32 is None
    assert await source.list("2025/01/04/") == []


@integration
async def test_stat(s3: S3, s3_bucket: str) -> None:
    etag = await put(s3.client, s3_bucket, f"p/{DAY}x.jpg", b"12345")
    source = S3Source(s3, bucket=s3_bucket, prefix="p")
    info = await source.stat(f"{DAY}x.jpg")
    listed = await source.list(DAY)
    assert info == listed[0]
    assert (info.key, info.size, info.etag, info.crc32) == (f"{DAY}x.jpg", 5, etag, None)

    with pytest.raises(ObjectNotFound):
        await source.stat(f"{DAY}missing.jpg")


@integration
async def test_read_whole_and_from_offset(s3: S3, s3_bucket: str) -> None:
    data = os.urandom(2 * READ_CHUNK_BYTES + 12345)
    await put(s3.client, s3_bucket, "k/big.bin", data)
    source = S3Source(s3, bucket=s3_bucket, prefix="k")

    whole, sizes = await read_all(source, "big.bin")
    assert whole == data
    assert max(sizes) <= READ_CHUNK_BYTES

    for offset in (1, READ_CHUNK_BYTES, len(data) - 1):
        part, _ = await read_all(source, "big.bin", offset=offset)
        assert part == data[offset:]


@integration
async def test_read_with_etag(s3: S3, s3_bucket: str) -> None:
    source = S3Source(s3, bucket=s3_bucket, prefix="")
    etag = await put(s3.client, s3_bucket, "e.bin", b"version one")

    assert (await read_all(source, "e.bin", etag=etag))[0] == b"version one"
    assert (await read_all(source, "e.bin", etag=etag, offset=8))[0] == b"one"
    with pytest.raises(ObjectChanged):
        await read_all(source, "e.bin", etag="0" * 32)

    await put(s3.client, s3_bucket, "e.bin", b"version two")
    with pytest.raises(ObjectChanged):
        await read_all(source, "e.bin", etag=etag)
    with pytest.raises(ObjectChanged):
        await read_all(source, "e.bin", etag=etag, offset=3)


@integration
async def test_read_missing_and_shrunk(s3: S3, s3_bucket: str) -> None:
    source = S3Source(s3, bucket=s3_bucket, prefix="")
    with pytest.raises(ObjectMissing):
        await read_all(source, "nope.bin")
    with pytest.raises(ObjectMissing):
        await read_all(source, "nope.bin", etag="abc", offset=5)

    await put(s3.client, s3_bucket, "short.bin", b"abc")
    with pytest.raises(ObjectChanged):  # a resume past the end: the object shrank
        await read_all(source, "short.bin", offset=10)


@integration
async def test_read_stopped_early_frees_the_connection(seaweedfs: SeaweedFS, s3_bucket: str) -> None:
    data = os.urandom(8 * READ_CHUNK_BYTES)
    async with s3_for(seaweedfs, connections=4) as small:  # a pool of 4 connections
        await put(small.client, s3_bucket, "big.bin", data)
        source = S3Source(small, bucket=s3_bucket, prefix="")
        # A leaked connection would exhaust the pool and hang: fail instead.
        async with asyncio.timeout(60):
            for _ in range(10):  # more abandoned reads than the pool has connections
                async with contextlib.aclosing(source.read("big.bin")) as chunks:
                    first = await anext(chunks)
                assert first == data[: len(first)]
            assert (await read_all(source, "big.bin"))[0] == data


@integration
async def test_full_object_crc32_from_seaweedfs(s3: S3, s3_bucket: str) -> None:
    data = os.urandom(100_000)
    await put(s3.client, s3_bucket, "single.bin", data, ChecksumAlgorithm="CRC32")

    part1, part2 = os.urandom(5 * 1024 * 1024), os.urandom(1000)
    for key, kwargs in (
        ("full.bin", {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"}),
        ("composite.bin", {"ChecksumAlgorithm": "CRC32"}),
    ):
        upload = await s3.client.create_multipart_upload(Bucket=s3_bucket, Key=key, **kwargs)
        parts = []
        for number, body in enumerate((part1, part2), start=1):
            resp = await s3.client.upload_part(
                Bucket=s3_bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="CRC32",
            )
            parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumCRC32": resp["ChecksumCRC32"]})
        await s3.client.complete_multipart_upload(
            Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )

    source = S3Source(s3, bucket=s3_bucket, prefix="")
    assert (await source.stat("single.bin")).crc32 == zlib.crc32(data)
    assert (await source.stat("full.bin")).crc32 == zlib.crc32(part1 + part2)
    assert (await source.stat("composite.bin")).crc32 is None


@integration
async def test_sigv4_is_enforced(seaweedfs: SeaweedFS, s3: S3, s3_bucket: str) -> None:
    await put(s3.client, s3_bucket, f"{DAY}x.jpg", b"secret photo")

    async with s3_for(seaweedfs, secret_key="not-the-secret") as wrong:
        source = S3Source(wrong, bucket=s3_bucket, prefix="")
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: source.stat(f"{DAY}x.jpg"),
            lambda: source.list(DAY),
            lambda: read_all(source, f"{DAY}x.jpg"),
        ]
        for attempt in attempts:
            with pytest.raises(SourceError) as caught:
                await attempt()
            assert type(caught.value) is SourceError
            assert not caught.value.retryable
            assert "denied" in caught.value.message

    async with httpx.AsyncClient(base_url=seaweedfs.endpoint_url, trust_env=False) as anonymous:
        for path in (f"/{s3_bucket}/{DAY}x.jpg", f"/{s3_bucket}/", f"/{s3_bucket}?list-type=2", "/"):
            assert (await anonymous.get(path)).status_code == 403
        put_resp = await anonymous.put(f"/{s3_bucket}/anon.txt", content=b"x")
        assert put_resp.status_code == 403


@integration
async def test_check(seaweedfs: SeaweedFS, s3: S3, s3_bucket: str, tmp_path: Any) -> None:
    await S3Source(s3, bucket=s3_bucket, prefix="").check()
    with pytest.raises(DependencyUnavailable):
        await S3Source(s3, bucket="no-such-bucket-here", prefix="").check()

    other = SeaweedFS(tmp_path / "stopped")
    with other:
        async with s3_for(other) as bundle:
            source = S3Source(bundle, bucket=other.bucket, prefix="")
            await source.check()
            other.stop()
            with pytest.raises(DependencyUnavailable):
                await source.check()
            with pytest.raises(SourceUnavailable):
                await source.stat("x")


@integration
async def test_connection_refused_is_retryable(seaweedfs: SeaweedFS) -> None:
    async with s3_for(seaweedfs, endpoint_url=f"http://127.0.0.1:{free_port()}") as nowhere:
        source = S3Source(nowhere, bucket="b", prefix="")
        with pytest.raises(SourceUnavailable):
            await source.stat("x")
        with pytest.raises(SourceUnavailable):
            await read_all(source, "x")
        with pytest.raises(SourceUnavailable):
            await source.list("")


async def _multipart(client: Any, bucket: str, key: str, body: bytes, **complete: Any) -> dict[str, Any]:
    upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
    part = await client.upload_part(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=body
    )
    try:
        return dict(
            await client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
                **complete,
            )
        )
    except botocore.exceptions.ClientError:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
        raise


@integration
async def test_complete_multipart_if_none_match(s3: S3, s3_bucket: str) -> None:
    """The cache commit relies on this: the first complete wins, a later one gets 412."""
    await _multipart(s3.client, s3_bucket, "cache/a.zip", b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        await _multipart(s3.client, s3_bucket, "cache/a.zip", b"second", IfNoneMatch="*")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
    source = S3Source(s3, bucket=s3_bucket, prefix="cache")
    assert (await read_all(source, "a.zip"))[0] == b"first"


@integration
async def test_concurrent_completes_leave_one_whole_object(s3: S3, s3_bucket: str) -> None:
    """SeaweedFS 4.48 may let several racing `IfNoneMatch="*"` completes succeed (AWS lets
    exactly one win); the object is still one whole upload, which is all a
    content-addressed cache needs."""
    bodies = [bytes([65 + i]) * 1000 for i in range(4)]

    async def attempt(body: bytes) -> str:
        try:
            await _multipart(s3.client, s3_bucket, "cache/race.zip", body, IfNoneMatch="*")
        except botocore.exceptions.ClientError as exc:
            return str(exc.response["ResponseMetadata"]["HTTPStatusCode"])
        return "ok"

    outcomes = await asyncio.gather(*(attempt(body) for body in bodies))
    assert "ok" in outcomes
    assert set(outcomes) <= {"ok", "412"}
    source = S3Source(s3, bucket=s3_bucket, prefix="cache")
    assert (await read_all(source, "race.zip"))[0] in bodies
