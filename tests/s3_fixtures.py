"""pytest fixtures for a real SeaweedFS S3 server (load with `pytest_plugins`).

`seaweedfs` is one `weed mini` per test session, in a temporary directory, stopped at the
end; `s3_bucket` is a fresh bucket per test so tests never see each other's objects;
`s3_client` is an aioboto3 client and `s3` the service's whole S3 bundle (client, lean
getter, credentials), both closed after the test.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.s3.client import S3, open_s3, open_s3_client
from service.settings import S3Settings
from service.stack.seaweedfs import SeaweedFS


def s3_settings(seaweedfs: SeaweedFS, **overrides: Any) -> S3Settings:
    values: dict[str, Any] = {
        "endpoint_url": seaweedfs.endpoint_url,
        "region": seaweedfs.region,
        "access_key": seaweedfs.access_key,
        "secret_key": seaweedfs.secret_key,
    }
    values.update(overrides)
    return S3Settings(**values)


@contextlib.asynccontextmanager
async def s3_for(seaweedfs: SeaweedFS, *, connections: int = 8, **overrides: Any) -> AsyncIterator[S3]:
    async with open_s3(s3_settings(seaweedfs, **overrides), max_connections=connections) as s3:
        yield s3


#: A second identity that may read and list LIMITED_BUCKET and nothing else (for tests of
#: what the service does when storage refuses it).
LIMITED_BUCKET = "limited-photos"
LIMITED_KEY, LIMITED_SECRET = "limited", "limited-secret"
_LIMITED = {
    "name": "limited",
    "credentials": [{"accessKey": LIMITED_KEY, "secretKey": LIMITED_SECRET}],
    "actions": [f"Read:{LIMITED_BUCKET}", f"List:{LIMITED_BUCKET}"],
}


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), identities=[_LIMITED]) as server:
        server.create_bucket(LIMITED_BUCKET)
        yield server


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    seaweedfs.create_bucket(name)
    return name


@pytest.fixture
async def s3_client(seaweedfs: SeaweedFS) -> AsyncIterator[Any]:
    async with open_s3_client(s3_settings(seaweedfs), max_pool_connections=32) as client:
        yield client


@pytest.fixture
async def s3(seaweedfs: SeaweedFS) -> AsyncIterator[S3]:
    async with s3_for(seaweedfs, connections=32) as bundle:
        yield bundle
