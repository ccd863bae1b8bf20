"""The lean GET path (aiohttp + our SigV4) against SeaweedFS, which enforces SigV4."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.constants import READ_CHUNK_BYTES
from service.exceptions import ObjectChanged, ObjectMissing, SourceError, SourceUnavailable
from service.sigv4 import Credentials
from service.sources.s3 import S3Source
from service.sources.s3_get import ObjectGetter, client_credentials, open_object_getter
from service.stack.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration


def fixed(credentials: Credentials):  # type: ignore[no-untyped-def]
    async def current() -> Credentials:
        return credentials

    return current


@contextlib.asynccontextmanager
async def getter_for(
    seaweedfs: SeaweedFS, credentials: Credentials | None = None, endpoint: str = "", connections: int = 8
) -> AsyncIterator[ObjectGetter]:
    creds = credentials or Credentials(seaweedfs.access_key, seaweedfs.secret_key)
    async with open_object_getter(
        endpoint_url=endpoint or seaweedfs.endpoint_url,
        region=seaweedfs.region,
        credentials=fixed(creds),
        max_connections=connections,
    ) as getter:
        yield getter


async def read_all(source: S3Source, key: str, **kwargs: Any) -> bytes:
    return b"".join([chunk async for chunk in source.read(key, **kwargs)])


async def test_reads_whole_from_offset_and_checks_the_etag(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str
) -> None:
    data = os.urandom(3 * READ_CHUNK_BYTES + 123)
    await s3_client.put_object(Bucket=s3_bucket, Key="p/2025/01/01/a b+ü.bin", Body=data)
    async with getter_for(seaweedfs) as getter:
        source = S3Source(s3_client, bucket=s3_bucket, prefix="p", getter=getter)
        info = await source.stat("2025/01/01/a b+ü.bin")
        chunks = [c async for c in source.read(info.key, etag=info.etag)]
        assert b"".join(chunks) == data
        assert max(len(c) for c in chunks) == READ_CHUNK_BYTES
        assert await read_all(source, info.key, offset=1000, etag=info.etag) == data[1000:]
        with pytest.raises(ObjectChanged):
            await read_all(source, info.key, etag="0" * 32)
        with pytest.raises(ObjectMissing):
            await read_all(source, "2025/01/01/missing.bin")


async def test_client_credentials_come_from_the_aioboto3_chain(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str
) -> None:
    await s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"hello")
    async with open_object_getter(
        endpoint_url=seaweedfs.endpoint_url,
        region=seaweedfs.region,
        credentials=client_credentials(s3_client),
        max_connections=2,
    ) as getter:
        assert (
            await read_all(S3Source(s3_client, bucket=s3_bucket, prefix="", getter=getter), "k") == b"hello"
        )


async def test_wrong_secret_is_a_clear_non_retryable_error(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str
) -> None:
    await s3_client.put_object(Bucket=s3_bucket, Key="k", Body=b"x")
    async with getter_for(seaweedfs, Credentials(seaweedfs.access_key, "wrong")) as getter:
        with pytest.raises(SourceError) as caught:
            await read_all(S3Source(s3_client, bucket=s3_bucket, prefix="", getter=getter), "k")
    assert not caught.value.retryable and "denied" in caught.value.message


async def test_server_down_is_retryable(seaweedfs: SeaweedFS, s3_client: Any) -> None:
    async with getter_for(seaweedfs, endpoint="http://127.0.0.1:9") as getter:
        with pytest.raises(SourceUnavailable):
            await read_all(S3Source(s3_client, bucket="b", prefix="", getter=getter), "k")


async def test_abandoned_reads_give_their_connections_back(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str
) -> None:
    await s3_client.put_object(Bucket=s3_bucket, Key="big", Body=os.urandom(4 * READ_CHUNK_BYTES))
    async with getter_for(seaweedfs, connections=2) as getter:
        source = S3Source(s3_client, bucket=s3_bucket, prefix="", getter=getter)
        for _ in range(6):  # more than the pool: would hang if a connection leaked
            async with contextlib.aclosing(source.read("big")) as body:  # type: ignore[type-var]
                assert len(await anext(body)) == READ_CHUNK_BYTES
        assert len(await read_all(source, "big")) == 4 * READ_CHUNK_BYTES


async def test_listing_pages_and_matches_botocore(
    seaweedfs: SeaweedFS, s3_client: Any, s3_bucket: str
) -> None:
    import asyncio

    keys = [f"p/2025/01/02/{i:05d}-ü +x.jpg" for i in range(1105)] + [
        "p/2025/01/02/deep/a.jpg",
        "p/2025/01/03/z",
    ]
    semaphore = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with semaphore:
            await s3_client.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())

    await asyncio.gather(*map(put, keys))
    async with getter_for(seaweedfs) as getter:
        lean = await S3Source(s3_client, bucket=s3_bucket, prefix="p", getter=getter).list("2025/01/02/")
        with pytest.raises(SourceError, match="not found"):
            await S3Source(s3_client, bucket="no-such-bucket", prefix="", getter=getter).list("x/")
    classic = await S3Source(s3_client, bucket=s3_bucket, prefix="p").list("2025/01/02/")
    assert lean == classic
    assert len(lean) == 1106 and lean[-1].key == "2025/01/02/deep/a.jpg"
