"""Dependencies that hang or restart, for real: a SeaweedFS frozen with SIGSTOP (a
blackholed network, a stuck gateway) makes /readyz answer 503 naming the source and the
cache within its deadline and cuts a live stream honestly instead of hanging it; a
redis-server restarted on its port does not fail the next job request."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.constants import READINESS_DEADLINE_S
from service.settings import Settings
from service.stack.redis import RedisServer
from service.stack.seaweedfs import SeaweedFS
from tests.s3_fixtures import open_s3_client, s3_settings
from tests.servers import serve
from tests.web.test_api import make_settings, write_files

pytestmark = pytest.mark.integration


@pytest.fixture
def frozen_able(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS of this test's own: freezing the session's one would stall other tests."""
    with SeaweedFS(tmp_path / "weed") as server:
        yield server
        if server.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGCONT)  # let it stop


@contextlib.contextmanager
def frozen(server: SeaweedFS) -> Iterator[None]:
    assert server.pid
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


async def test_a_frozen_s3_fails_readiness_in_time_and_cuts_the_stream(
    frozen_able: SeaweedFS, tmp_path: Path
) -> None:
    weed = frozen_able
    async with open_s3_client(s3_settings(weed), max_pool_connections=8) as client:
        for i in range(24):
            await client.put_object(
                Bucket=weed.bucket, Key=f"p/2025/01/01/big{i:02d}.bin", Body=os.urandom(1 << 20)
            )
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"s3://{weed.bucket}/p",
            "ZIPEDGE_CACHE": f"s3://{weed.bucket}/cache",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "ZIPEDGE_S3_TIMEOUT_S": "1",
            "ZIPEDGE_FETCH_CONCURRENCY": "2",
            "ZIPEDGE_PREFETCH_BYTES": str(1 << 20),
            "ZIPEDGE_TEE_ON_DISCONNECT": "abort",
            "AWS_ENDPOINT_URL": weed.endpoint_url,
            "AWS_ACCESS_KEY_ID": weed.access_key,
            "AWS_SECRET_ACCESS_KEY": weed.secret_key,
            "AWS_REGION": weed.region,
        }
    )
    with serve(create_app(settings)) as url:
        # Generous client timeouts: a hang would show up as a ReadTimeout, not as a cut.
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60)) as client:
            assert (await client.get("/readyz")).status_code == 200
            received = 0
            async with client.stream(
                "GET", "/v1/zip", params={"from": "2025-01-01", "to": "2025-01-01"}
            ) as r:
                assert r.status_code == 200
                chunks = r.aiter_raw()
                received += len(await anext(chunks))
                with frozen(weed):
                    with pytest.raises(httpx.RemoteProtocolError):
                        async for chunk in chunks:
                            received += len(chunk)
                    # Still frozen: readiness answers in time, naming what does not answer.
                    ready = await client.get("/readyz")
    assert received < 24 << 20  # visibly incomplete
    assert ready.status_code == 503 and ready.headers["retry-after"]
    checks: dict[str, Any] = ready.json()["checks"]
    deadline = f"no answer within {READINESS_DEADLINE_S:g} s"
    assert checks["source"] == checks["cache"] == deadline, checks
    assert checks["manifests"] == "ok"


async def test_the_first_job_request_after_a_redis_restart_succeeds(
    private_redis_server: RedisServer, tmp_path: Path
) -> None:
    root = tmp_path / "photos"
    write_files(root)
    app = create_app(make_settings(root, tmp_path / "var", ZIPEDGE_REDIS_URL=private_redis_server.url))
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = await client.post("/v1/jobs", json={"from": "2025-01-01", "to": "2025-01-01"})
            assert first.status_code == 202, first.text
            assert (await client.get("/v1/jobs")).status_code == 200
            # Every connection the service pooled is now dead; the next request must not fail.
            private_redis_server.restart()
            again = await client.post("/v1/jobs", json={"from": "2025-01-02", "to": "2025-01-02"})
            assert again.status_code == 202, again.text
            listed = await client.get("/v1/jobs")
            assert listed.status_code == 200 and [j["id"] for j in listed.json()["jobs"]] == [
                again.json()["id"]
            ]
            # Posted archives (their manifests are in Redis) too.
            posted = await client.post("/v1/archives", json={"entries": [{"key": "2025/01/03/empty.jpg"}]})
            assert posted.status_code == 201, posted.text
