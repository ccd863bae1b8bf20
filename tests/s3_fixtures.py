"""pytest fixtures for a real SeaweedFS S3 server (load with `pytest_plugins`).

`seaweedfs` is one `weed mini` per test session, in a temporary directory, stopped at the
end; `s3_bucket` is a fresh bucket per test so tests never see each other's objects;
`s3_client` is a client from `open_s3_client`, closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.sources.s3 import open_s3_client
from service.stack.seaweedfs import SeaweedFS


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> str:
    name = f"t-{uuid.uuid4().hex[:20]}"
    seaweedfs.create_bucket(name)
    return name


@pytest.fixture
async def s3_client(seaweedfs: SeaweedFS) -> AsyncIterator[Any]:
    async with open_s3_client(
        endpoint_url=seaweedfs.endpoint_url,
        region=seaweedfs.region,
        access_key=seaweedfs.access_key,
        secret_key=seaweedfs.secret_key,
        max_pool_connections=32,
    ) as client:
        yield client
