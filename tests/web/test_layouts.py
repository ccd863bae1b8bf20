"""A resume when the same selection has been served as more than one layout (the first
stream learned CRCs, so the next full GET got a layout without data descriptors): with
If-Range the client gets the bytes of the layout it names; without it, the layout that
client was served; a client the service has no record of gets the whole current archive,
which curl refuses to append. Never a file stitched from two layouts. In the folder store
and in Redis, where processes record the switch in one step."""

from __future__ import annotations

import io
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import asyncio as aioredis

from service.archive.manifest import Candidate, Manifest, build_manifest
from service.manifests import FolderManifestStore, RedisManifestStore, ServedLayout
from service.stack.redis import RedisServer
from tests.web.test_ranges import PARAMS, Live, running
from tests.zipcheck import check_archive


@pytest.fixture(params=["folder", "redis"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    env = {}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("private_redis_server")
        env["ZIPEDGE_REDIS_URL"] = server.url
    with running("folder", request, tmp_path, **env) as started:
        yield started


#: Clients by address (the service trusts X-Forwarded-For from loopback, as from nginx).
ALICE = {"X-Forwarded-For": "10.0.0.1"}
BOB = {"X-Forwarded-For": "10.0.0.2"}
CAROL = {"X-Forwarded-For": "10.0.0.3"}


def two_layouts(live: Live) -> tuple[httpx.Response, httpx.Response]:
    """Alice's first third of the first layout, then Bob's two full downloads (the second
    is the layout without descriptors): (Alice's part, Bob's last download)."""
    with live.client() as client:
        size = int(client.head("/v1/zip", params=PARAMS, headers=ALICE).headers["content-length"])
        part = client.get("/v1/zip", params=PARAMS, headers={"Range": f"bytes=0-{size // 3}", **ALICE})
        assert part.status_code == 206
        client.get("/v1/zip", params=PARAMS, headers=BOB)
        last = client.get("/v1/zip", params=PARAMS, headers=BOB)
    assert last.headers["etag"] != part.headers["etag"]  # B got another layout
    return part, last


def test_if_range_resumes_the_layout_it_names(live: Live, tmp_path: Path) -> None:
    part, _ = two_layouts(live)
    offset = len(part.content)
    with live.client() as client:
        rest = client.get(
            "/v1/zip",
            params=PARAMS,
            headers={"Range": f"bytes={offset}-", "If-Range": part.headers["etag"], **CAROL},
        )
    assert rest.status_code == 206 and rest.headers["etag"] == part.headers["etag"]
    out = tmp_path / "a.zip"
    out.write_bytes(part.content + rest.content)
    check_archive(out, live.expected())


@pytest.mark.parametrize("by", ["nothing", "date"])
def test_a_plain_resume_continues_the_layout_that_client_was_served(
    live: Live, tmp_path: Path, by: str
) -> None:
    part, last = two_layouts(live)
    headers = {"Range": f"bytes={len(part.content)}-", **ALICE}
    if by == "date":
        headers["If-Range"] = part.headers["last-modified"]
    with live.client() as client:
        rest = client.get("/v1/zip", params=PARAMS, headers=headers)
        bobs = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=100-", **BOB})
    assert rest.status_code == 206 and rest.headers["etag"] == part.headers["etag"]
    out = tmp_path / "a.zip"
    out.write_bytes(part.content + rest.content)
    check_archive(out, live.expected())
    assert bobs.status_code == 206 and bobs.content == last.content[100:]


@pytest.mark.parametrize("by", ["nothing", "date"])
def test_an_unknown_client_gets_the_whole_archive_not_another_layouts_bytes(live: Live, by: str) -> None:
    part, last = two_layouts(live)
    headers = {"Range": f"bytes={len(part.content)}-", **CAROL}
    if by == "date":  # both layouts carry the same Last-Modified: it names neither
        assert part.headers["last-modified"] == last.headers["last-modified"]
        headers["If-Range"] = part.headers["last-modified"]
    with live.client() as client:
        rest = client.get("/v1/zip", params=PARAMS, headers=headers)
    assert rest.status_code == 200
    assert rest.headers["etag"] == last.headers["etag"] and rest.content == last.content
    assert zipfile.ZipFile(io.BytesIO(rest.content)).testzip() is None


@pytest.mark.skipif(not shutil.which("curl"), reason="curl (Debian curl)")
def test_curl_refuses_to_append_rather_than_stitch(live: Live, tmp_path: Path) -> None:
    part, _ = two_layouts(live)
    out = tmp_path / "a.zip"
    out.write_bytes(part.content)
    url = f"{live.url}/v1/zip?from={PARAMS['from']}&to={PARAMS['to']}"
    done = subprocess.run(
        ["curl", "-sS", "-C", "-", "-H", f"X-Forwarded-For: {CAROL['X-Forwarded-For']}", "-o", str(out), url],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 33, done.stderr  # "server doesn't seem to support byte ranges"
    assert out.read_bytes() == part.content  # nothing appended


def layout(size: int) -> Manifest:
    return build_manifest(
        [Candidate("key", "2025/01/01/A.jpg", "2025/01/01/A.jpg", size, f"e{size}", 1_736_000_000.0)],
        source="memory:",
        filename="a.zip",
    )


async def test_the_stores_remember_when_a_selection_changed_layout(
    tmp_path: Path, private_redis_server: RedisServer
) -> None:
    manifest, other_manifest = layout(10), layout(20)
    client = aioredis.Redis.from_url(private_redis_server.url)
    try:
        for store in (FolderManifestStore(tmp_path / "m"), RedisManifestStore(client)):
            assert await store.served("range:a") is None
            await store.serve("range:a", manifest)
            await store.serve("range:a", manifest)
            first = await store.served("range:a")
            assert first == ServedLayout(manifest.archive_id) and first.alone(time.time())
            before = time.time()
            await store.serve("range:a", other_manifest)
            switched = await store.served("range:a")
            assert switched is not None and switched.archive_id == other_manifest.archive_id
            assert switched.switched_at is not None and switched.switched_at >= before - 1
            assert not switched.alone(time.time())
            await store.serve("range:a", other_manifest)  # the same again: the switch stays
            assert await store.served("range:a") == switched
            assert switched.alone(time.time() + 2 * 24 * 3600)  # long after: one layout again
    finally:
        await client.aclose()
