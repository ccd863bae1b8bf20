"""The S3 endpoint the benchmark talks to, and clients for it (SigV4, path style)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aioboto3
from botocore.config import Config

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client as S3Client
else:
    S3Client = Any


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        port = urlsplit(self.endpoint_url).port
        if port is None:
            raise ValueError(f"endpoint {self.endpoint_url} has no explicit port")
        return port

    def via(self, url: str) -> S3Endpoint:
        """The same server and credentials reached through another address (the delay proxy)."""
        return replace(self, endpoint_url=url)

    def env(self) -> dict[str, str]:
        """Standard AWS variables for a subprocess (the service)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }


def client_config(pool: int) -> Config:
    # SigV4 always (SeaweedFS accepts SigV2 loosely, so a wrong default would go unnoticed);
    # checksums only when required, as the service does, so both pay the same CPU per GET.
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        max_pool_connections=pool,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
    )


@contextlib.asynccontextmanager
async def s3_client(ep: S3Endpoint, pool: int) -> AsyncIterator[S3Client]:
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=ep.endpoint_url,
        aws_access_key_id=ep.access_key,
        aws_secret_access_key=ep.secret_key,
        region_name=ep.region,
        config=client_config(pool),
    ) as client:
        yield client


async def ensure_bucket(s3: S3Client, bucket: str) -> None:
    try:
        await s3.head_bucket(Bucket=bucket)
    except Exception:  # botocore's ClientError (404) or SeaweedFS's variants: just try to create
        await s3.create_bucket(Bucket=bucket)


async def delete_prefix(s3: S3Client, bucket: str, prefix: str) -> int:
    """Delete every object under `prefix` (a run's cache objects); how many there were."""
    deleted = 0
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [o["Key"] for o in page.get("Contents", [])]
        if keys:
            await s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
            )
            deleted += len(keys)
    return deleted
