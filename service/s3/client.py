"""One S3 bundle per process: the aioboto3 client (control plane), the lean getter (data
plane) and the credentials provider both sign with, opened and closed together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from service.constants import S3_MAX_ATTEMPTS
from service.s3.credentials import CredentialsProvider, SessionCredentials, StaticCredentials
from service.s3.getter import ObjectGetter, open_object_getter
from service.settings import S3Settings
from service.sigv4 import Credentials

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
else:
    S3Client = Any


@dataclass(frozen=True, slots=True)
class S3:
    config: S3Settings
    client: S3Client
    getter: ObjectGetter
    credentials: CredentialsProvider


def botocore_config(*, max_pool_connections: int, path_style: bool, timeout_s: float) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        s3={
            "addressing_style": "path" if path_style else "auto",
            # Bodies (cache parts, uploads) are sent with UNSIGNED-PAYLOAD, as the data
            # plane's GETs are: botocore would SHA-256 every part (without a checksum
            # header, over TLS too) and S3 hash it again to check, ~1 s of the sender's
            # CPU per GB. The archive writer counts every byte it promised; TLS protects
            # bodies in transit where S3 is reached over the network.
            "payload_signing_enabled": False,
        },
        max_pool_connections=max_pool_connections,
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"mode": "standard", "total_max_attempts": S3_MAX_ATTEMPTS},
        # botocore >= 1.36 would add CRC trailers and validate bodies, which several
        # non-AWS servers reject; sizes and CRCs are checked by the archive writer.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


@contextlib.asynccontextmanager
async def open_s3_client(config: S3Settings, *, max_pool_connections: int) -> AsyncIterator[S3Client]:
    """Only the aioboto3 client (tools and tests that need no data plane)."""
    async with _client(AioSession(), config, max_pool_connections) as client:
        yield client


@contextlib.asynccontextmanager
async def open_s3(config: S3Settings, *, max_connections: int) -> AsyncIterator[S3]:
    """The client, the getter and the credentials, each pool sized `max_connections`."""
    core = AioSession()
    credentials: CredentialsProvider
    if config.access_key and config.secret_key:
        credentials = StaticCredentials(Credentials(config.access_key, config.secret_key))
    else:
        credentials = SessionCredentials(core)
    async with (
        _client(core, config, max_connections) as client,
        open_object_getter(
            endpoint_url=config.endpoint_url,
            region=config.signing_region,
            credentials=credentials,
            max_connections=max_connections,
            timeout_s=config.timeout_s,
        ) as getter,
    ):
        yield S3(config=config, client=client, getter=getter, credentials=credentials)


def _client(core: AioSession, config: S3Settings, max_pool_connections: int) -> Any:
    session = aioboto3.Session(botocore_session=core)
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url or None,
        region_name=config.region or None,
        aws_access_key_id=config.access_key or None,
        aws_secret_access_key=config.secret_key or None,
        config=botocore_config(
            max_pool_connections=max_pool_connections,
            path_style=config.path_style,
            timeout_s=config.timeout_s,
        ),
    )
