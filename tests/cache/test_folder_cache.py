"""Build once, serve many on the embedded default: a folder cache, an in-process lock,
and the service serving cached archives itself with Range."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from service.app import create_app
from service.settings import Settings
from service.streams import Streams
from tests.servers import serve
from tests.zipcheck import check_archive, sha256

RANGE = {"from": "2025-01-01", "to": "2025-01-02"}


def photos(root: Path, count: int = 12, size: int = 50_000) -> dict[str, bytes]:
    files = {f"2025/01/0{1 + i % 2}/CAR{i:03d}.jpg": os.urandom(size + i) for i in range(count)}
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
            "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            **env,
        }
    )


def wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 20
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_stream_then_redirect_then_range(tmp_path: Path) -> None:
    files = photos(tmp_path / "photos")
    app = create_app(settings(tmp_path))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        streams: Streams = app.state.services.streams
        first = client.get("/v1/zip", params=RANGE)
        assert first.status_code == 200
        wait_for(lambda: not streams.building, "the cache write to settle")
        cached = list((tmp_path / "cache").glob("*.zip"))
        assert len(cached) == 1 and not list((tmp_path / "cache").glob(".partial-*"))

        # The embedded default serves its cache itself, at the same URL: no redirect a
        # `curl -OJ` would save as an empty file.
        served = client.get("/v1/zip", params=RANGE)
        assert served.status_code == 200 and served.content == first.content
        assert served.headers["x-archive-cache"] == "hit"
        assert served.headers["etag"] == first.headers["etag"]  # the bytes the stream sent
        assert served.headers["last-modified"] == first.headers["last-modified"]
        assert served.headers["accept-ranges"] == "bytes"
        assert "photos-2025-01-01_2025-01-02.zip" in served.headers["content-disposition"]
        part = client.get("/v1/zip", params=RANGE, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == first.content[100:1100]
        unchanged = client.get("/v1/zip", params=RANGE, headers={"If-None-Match": first.headers["etag"]})
        assert unchanged.status_code == 304
        head = client.head("/v1/zip", params=RANGE)
        assert head.status_code == 200 and head.headers["content-length"] == str(len(first.content))
    path = tmp_path / "a.zip"
    path.write_bytes(served.content)
    check_archive(path, {k: sha256(files[k]) for k in sorted(files)})


def test_a_failed_stream_caches_nothing(tmp_path: Path) -> None:
    files = photos(tmp_path / "photos")
    app = create_app(settings(tmp_path))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        keys = sorted(files)
        doc = client.post("/v1/archives", json={"entries": [{"key": k} for k in keys]}).json()
        (tmp_path / "photos" / keys[-1]).write_bytes(b"changed")
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", doc["url"]) as response:
            for _ in response.iter_raw():
                pass
        streams: Streams = app.state.services.streams
        wait_for(lambda: not streams.building, "the build to settle")
        assert client.head(doc["url"]).status_code == 200  # still not cached
    assert not list((tmp_path / "cache").iterdir())  # no object, no partial file


@pytest.mark.parametrize("policy", ["finish", "abort"])
def test_client_leaving_mid_stream_follows_the_policy(tmp_path: Path, policy: str) -> None:
    photos(tmp_path / "photos", count=30, size=1 << 20)
    app = create_app(
        settings(tmp_path, ZIPEDGE_TEE_ON_DISCONNECT=policy, ZIPEDGE_PREFETCH_BYTES=str(1 << 20))
    )
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        streams: Streams = app.state.services.streams
        with client.stream("GET", "/v1/zip", params=RANGE) as response:
            chunks = response.iter_raw()  # held: a dropped iterator closes the connection
            next(chunks)
            assert streams.active == 1  # the client leaves mid-stream, not before
        wait_for(lambda: streams.active == 0 and not streams.building, "the build to settle")
        again = client.get("/v1/zip", params=RANGE)
    assert again.status_code == 200
    assert again.headers["x-archive-cache"] == ("hit" if policy == "finish" else "miss")
    assert not list((tmp_path / "cache").glob(".partial-*"))


def gated_origin(root: Path, gate: threading.Event) -> Starlette:
    """Photos over HTTP whose GETs wait for `gate` (HEADs do not): a build that reads one
    stays unfinished until the test lets it go."""

    async def photo(request: Request) -> Response:
        if request.method == "GET":
            await anyio.to_thread.run_sync(gate.wait)
        return FileResponse(root / request.path_params["name"])

    return Starlette(routes=[Route("/slow/{name}", photo, methods=["GET", "HEAD"])])


def test_background_builds_are_limited_per_process(tmp_path: Path) -> None:
    files = photos(tmp_path / "photos")
    keys = sorted(files)
    (tmp_path / "origin").mkdir()
    slow = {name: os.urandom(100_000) for name in ("a.jpg", "b.jpg")}
    for name, data in slow.items():
        (tmp_path / "origin" / name).write_bytes(data)
    gate = threading.Event()
    with serve(gated_origin(tmp_path / "origin", gate)) as origin:
        app = create_app(
            settings(
                tmp_path,
                ZIPEDGE_MAX_BUILDS="1",
                ZIPEDGE_HTTP_ALLOW=origin.removeprefix("http://"),
                ZIPEDGE_HTTP_ALLOW_PRIVATE="true",
            )
        )
        try:
            with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
                streams: Streams = app.state.services.streams
                # Three archives of different objects (each its own build lock); the first
                # two end with a photo the origin holds back.
                bodies = [
                    {"entries": [{"key": k} for k in keys[:4]] + [{"url": f"{origin}/slow/a.jpg"}]},
                    {"entries": [{"key": k} for k in keys[4:8]] + [{"url": f"{origin}/slow/b.jpg"}]},
                    {"entries": [{"key": k} for k in keys[8:]]},
                ]
                a, b, c = (client.post("/v1/archives", json=body).json() for body in bodies)
                for doc in (a, b):
                    with client.stream("GET", doc["url"]) as response:
                        assert response.status_code == 200
                        next(response.iter_raw())  # the client leaves mid-stream
                    wait_for(lambda: streams.active == 0, "the client's stream to end")
                    if doc is a:
                        wait_for(lambda: streams.background_builds == 1, "A to build for the cache")
                # B's build, beyond the one allowed, stops; A's goes on for the cache alone.
                wait_for(lambda: streams.building == 1, "B's build to stop")
                assert streams.background_builds == 1
                # The limit is on builds without a client: one with its client still tees.
                whole = client.get(c["url"])
                assert whole.status_code == 200 and len(whole.content) == c["size"]
                wait_for(lambda: streams.building == 1, "C's cache write")
                gate.set()
                wait_for(lambda: not streams.building, "A's build")
                assert len(list((tmp_path / "cache").glob("*.zip"))) == 2  # A's and C's
                assert not list((tmp_path / "cache").glob(".partial-*"))
                assert client.get(a["url"]).headers["x-archive-cache"] == "hit"
                assert client.get(c["url"]).headers["x-archive-cache"] == "hit"
                again = client.get(b["url"])  # B was not cached, and streams whole
        finally:
            gate.set()
    assert again.status_code == 200 and again.headers["x-archive-cache"] == "miss"
    path = tmp_path / "b.zip"
    path.write_bytes(again.content)
    check_archive(path, {k: sha256(files[k]) for k in keys[4:8]} | {"b.jpg": sha256(slow["b.jpg"])})
    path.write_bytes(whole.content)
    check_archive(path, {k: sha256(files[k]) for k in keys[8:]})


def test_cache_route_refuses_unknown_ids(tmp_path: Path) -> None:
    photos(tmp_path / "photos")
    app = create_app(settings(tmp_path))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        missing = client.get("/v1/cache/0123456789abcdef0123456789abcdef.zip")
        bad = client.get("/v1/cache/..%2F..%2Fetc%2Fpasswd.zip")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_archive"
    assert bad.status_code == 404


def cached_once(client: httpx.Client, app: object, cache: Path) -> tuple[httpx.Response, str]:
    """(the live stream's answer, the `/v1/cache/` path of the archive it cached)."""
    first = client.get("/v1/zip", params=RANGE)
    assert first.status_code == 200 and first.headers["x-archive-cache"] == "miss"
    streams: Streams = app.state.services.streams  # type: ignore[attr-defined]
    wait_for(lambda: not streams.building, "the cache write to settle")
    [cached] = [p for p in cache.glob("*.zip") if not p.name.startswith(".")]
    return first, f"/v1/cache/{cached.name}"


def test_cache_route_revalidates_like_the_zip_route(tmp_path: Path) -> None:
    """A job's download link and the range's URL answer the same validators the same way:
    a list of ETags, a weakened `W/` one and `*` are a 304; another archive's is the file."""
    photos(tmp_path / "photos")
    app = create_app(settings(tmp_path))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        first, cache_path = cached_once(client, app, tmp_path / "cache")
        etag = first.headers["etag"]
        served = client.get(cache_path)
        assert served.status_code == 200 and served.content == first.content
        assert served.headers["etag"] == etag
        # the newest member's mtime, as the live stream said (the file's mtime is set to it)
        assert served.headers["last-modified"] == first.headers["last-modified"]
        for value in (etag, f'"0123456789abcdef0123456789abcdef", {etag}', f"W/{etag}", "*"):
            for path, params in ((cache_path, None), ("/v1/zip", RANGE)):
                unchanged = client.get(path, params=params, headers={"If-None-Match": value})
                assert unchanged.status_code == 304, (path, value)
                assert unchanged.headers["etag"] == etag and unchanged.content == b""
        for value in ('"0123456789abcdef0123456789abcdef"', 'W/"0123456789abcdef0123456789abcdef"', ""):
            for path, params in ((cache_path, None), ("/v1/zip", RANGE)):
                changed = client.get(path, params=params, headers={"If-None-Match": value})
                assert changed.status_code == 200 and changed.content == first.content, (path, value)


needs_curl = pytest.mark.skipif(not shutil.which("curl"), reason="curl (Debian curl)")


@needs_curl
@pytest.mark.parametrize("route", ["zip", "cache"])
def test_curl_resumes_a_cached_archive(tmp_path: Path, route: str) -> None:
    """`curl -C -` (a real curl) finishing a third of a cached archive saves the very file
    the stream sent, from the range's URL and from the cache's own."""
    files = photos(tmp_path / "photos")
    app = create_app(settings(tmp_path))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        first, cache_path = cached_once(client, app, tmp_path / "cache")
        target = f"{url}{cache_path}" if route == "cache" else f"{url}/v1/zip?{urlencode(RANGE)}"
        size = len(first.content)
        part = client.get(target, headers={"Range": f"bytes=0-{size // 3}"})
        assert part.status_code == 206 and part.content == first.content[: size // 3 + 1]
        out = tmp_path / "resumed.zip"
        out.write_bytes(part.content)
        done = subprocess.run(
            ["curl", "-sS", "-f", "-C", "-", "-o", str(out), target],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(first.content).hexdigest()
    check_archive(out, {k: sha256(files[k]) for k in sorted(files)})


def test_write_all_writes_every_piece_in_order_through_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder writer hands its chunks to writev as they are: more pieces than one call
    takes, empty ones, and writes the kernel cuts short (caused here by a writev that
    takes at most 1,000 bytes; a full disk or a signal does it for real) all land whole."""
    from service.cache import folder

    pieces = [os.urandom(n) for n in (0, 1, 999, 4096, 0, 70_000)] * 400  # > IOV_MAX pieces
    real = os.writev
    calls = 0

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        nonlocal calls
        calls += 1
        taken, size = [], 0
        for buffer in buffers:
            taken.append(buffer[: 1000 - size])
            size += len(taken[-1])
            if size >= 1000:
                break
        return real(fd, taken)

    path = tmp_path / "out.bin"
    with open(path, "wb") as handle:
        folder.write_all(handle.fileno(), pieces)
    assert path.read_bytes() == b"".join(pieces)

    monkeypatch.setattr(folder.os, "writev", short_writev)
    with open(path, "wb") as handle:
        folder.write_all(handle.fileno(), pieces)
    assert path.read_bytes() == b"".join(pieces)
    assert calls >= sum(map(len, pieces)) // 1000
