"""Range on the live stream, before any cache exists: any single range is exactly the
bytes a full GET of that ETag has there, fetching only what overlaps it; If-Range is
honoured; a resumed or four-connection download by real clients (curl, aria2c) gives the
right archive; a range whose objects changed fails honestly."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.sources.memory import MemorySource
from service.stack.seaweedfs import SeaweedFS
from tests.servers import serve
from tests.zipcheck import check_archive, sha256

PARAMS = {"from": "2025-01-01", "to": "2025-01-02"}
MTIME = 1_736_000_000


@dataclass
class Live:
    """A running service over one source, folder or S3 (SeaweedFS); `put` writes an object
    behind the service's back, as a camera or an operator would."""

    url: str
    files: dict[str, bytes]
    app: Any
    put: Callable[[str, bytes], None]
    cache: Path | None = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def expected(self) -> dict[str, str]:
        return {k: sha256(v) for k, v in sorted(self.files.items())}

    def add(self, key: str, data: bytes) -> None:
        self.files[key] = data
        self.put(key, data)


def contents(count: int = 40, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {
        f"2025/01/0{1 + i % 2}/MH12AB{i:04d}-0830{i % 60:02d}.jpg": os.urandom(
            rng.choice([0, 1, 999, 30_000, 70_000])
        )
        for i in range(count)
    }


def write(root: Path, count: int = 40, seed: int = 1) -> dict[str, bytes]:
    files = contents(count, seed)
    for i, (key, data) in enumerate(files.items()):
        put_file(root, key, data, MTIME + i)
    return files


def put_file(root: Path, key: str, data: bytes, mtime: int = MTIME) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def put_s3(seaweedfs: SeaweedFS, bucket: str, key: str, data: bytes) -> None:
    status, body = seaweedfs.request("PUT", f"/{bucket}/gate7/{key}", data)
    assert status == 200, body[:300]


@contextlib.contextmanager
def running(kind: str, request: pytest.FixtureRequest, tmp_path: Path, **env: str) -> Iterator[Live]:
    """The service over `kind` ("folder" or "s3") holding `contents()`; `env` adds settings."""
    files = contents()
    base = {"ZIPEDGE_CACHE": "", "ZIPEDGE_DATA_DIR": str(tmp_path / "var"), **env}
    if kind == "folder":
        root = tmp_path / "photos"
        for i, (key, data) in enumerate(files.items()):
            put_file(root, key, data, MTIME + i)
        settings = Settings.from_env({"ZIPEDGE_SOURCE": f"file://{root}", **base})

        def put(key: str, data: bytes) -> None:
            put_file(root, key, data)

    else:
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        bucket: str = request.getfixturevalue("s3_bucket")
        for key, data in files.items():
            put_s3(seaweedfs, bucket, key, data)
        settings = Settings.from_env(
            {
                "ZIPEDGE_SOURCE": f"s3://{bucket}/gate7",
                "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
                "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
                "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
                "AWS_REGION": seaweedfs.region,
                **base,
            }
        )

        def put(key: str, data: bytes) -> None:
            put_s3(seaweedfs, bucket, key, data)

    app = create_app(settings)
    cache = Path(env["ZIPEDGE_CACHE"].removeprefix("file://")) if env.get("ZIPEDGE_CACHE") else None
    with serve(app) as url:
        yield Live(url, files, app, put, cache)


SOURCES = ["folder", pytest.param("s3", marks=pytest.mark.integration)]


@pytest.fixture(params=SOURCES)
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    with running(request.param, request, tmp_path) as started:
        yield started


def windows(size: int, full: bytes) -> list[tuple[int, int]]:
    """Inclusive (first, last) byte ranges: the edges, inside records, across members."""
    eocd = full.rfind(b"PK\x05\x06")
    central = full.find(b"PK\x01\x02")
    descriptor = full.find(b"PK\x07\x08")
    rng = random.Random(5)
    found = [(0, 0), (size - 1, size - 1), (0, size - 1), (3, 40), (central, size - 1)]
    found += [(central + 7, central + 300), (eocd - 5, size - 1), (eocd + 3, eocd + 10)]
    if descriptor >= 0:
        found += [(descriptor + 2, descriptor + 9), (descriptor - 10, descriptor + 30)]
    local = full.find(b"PK\x03\x04", 1)  # the second member's local header, and across it
    found += [(local, local + 29), (local + 14, local + 26), (local - 3, local + 80)]
    found += [tuple(sorted(rng.sample(range(size), 2))) for _ in range(25)]  # type: ignore[misc]
    return found


def test_any_single_range_is_the_same_slice_of_the_full_archive(live: Live) -> None:
    """Both layouts of the same photos: the first archive (data descriptors, CRCs learned
    by the stream itself) and the next one (every CRC in its local headers)."""
    with live.client() as client:
        for learned in (False, True):
            full = client.get("/v1/zip", params=PARAMS)
            assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
            etag, size = full.headers["etag"], len(full.content)
            assert any(descriptor_flags_of(full.content)) is not learned
            for first, last in windows(size, full.content):
                part = client.get("/v1/zip", params=PARAMS, headers={"Range": f"bytes={first}-{last}"})
                assert part.status_code == 206, (first, last, part.text[:200])
                assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
                assert part.headers["etag"] == etag
                assert int(part.headers["content-length"]) == last - first + 1
                assert part.content == full.content[first : last + 1], (learned, first, last)
        suffix = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=-100"})
        assert suffix.status_code == 206 and suffix.content == full.content[-100:]
        head = client.head("/v1/zip", params=PARAMS, headers={"Range": "bytes=10-19"})
        assert head.status_code == 206 and head.headers["content-length"] == "10" and head.content == b""


def descriptor_flags_of(archive: bytes) -> list[bool]:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return [bool(i.flag_bits & 0x08) for i in opened.infolist()]


def test_if_range_and_unsatisfiable_ranges(live: Live) -> None:
    with live.client() as client:
        full = client.get("/v1/zip", params=PARAMS)
        etag, size = full.headers["etag"], len(full.content)
        same = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=100-199", "If-Range": etag})
        assert same.status_code == 206 and same.content == full.content[100:200]
        by_date = client.get(
            "/v1/zip",
            params=PARAMS,
            headers={"Range": "bytes=100-199", "If-Range": full.headers["last-modified"]},
        )
        assert by_date.status_code == 206 and by_date.content == full.content[100:200]
        other = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=100-199", "If-Range": '"nope"'})
        assert other.status_code == 200  # the whole (current) archive, not a part of another
        assert int(other.headers["content-length"]) == len(other.content)
        several = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=0-9,20-29"})
        assert several.status_code == 200
        size = len(several.content)  # the layout the selection is served as now
        past = client.get("/v1/zip", params=PARAMS, headers={"Range": f"bytes={size}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
        assert past.json()["error"]["code"] == "range_not_satisfiable"


def test_a_range_fetches_only_the_objects_it_overlaps(tmp_path: Path) -> None:
    """With every CRC known, nothing outside the window is read: a range at 90 % of the
    archive opens the few objects there, not the hundred before them."""
    from service.listing import DirectListings
    from service.resolver import Limits, Resolver  # noqa: F401 - the same pieces the app wires

    root = tmp_path / "photos"
    write(root, count=100)
    settings = Settings.from_env(
        {"ZIPEDGE_SOURCE": f"file://{root}", "ZIPEDGE_CACHE": "", "ZIPEDGE_DATA_DIR": str(tmp_path / "var")}
    )
    app = create_app(settings)
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        client.get("/v1/zip", params=PARAMS)  # learns every CRC
        primed = client.get("/v1/zip", params=PARAMS)  # no descriptors now
        assert not any(descriptor_flags_of(primed.content))
        source = app.state.services.runtime.source
        opened: list[str] = []
        original = source.read

        def counting(key: str, **kwargs: object):  # type: ignore[no-untyped-def]
            opened.append(key)
            return original(key, **kwargs)  # type: ignore[arg-type]

        source.read = counting  # type: ignore[method-assign]
        size = len(primed.content)
        start = int(size * 0.9)
        part = client.get("/v1/zip", params=PARAMS, headers={"Range": f"bytes={start}-{start + 50_000}"})
        assert part.status_code == 206 and part.content == primed.content[start : start + 50_001]
        assert 0 < len(opened) <= 5, opened
        tail = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=-2000"})  # the directory
        assert tail.content == primed.content[-2000:]
        assert len(opened) <= 5  # the directory needed no read at all
    assert isinstance(DirectListings, type) and isinstance(MemorySource, type)


def test_a_range_whose_objects_changed_fails_honestly(live: Live) -> None:
    with live.client() as client:
        full = client.get("/v1/zip", params=PARAMS)
        size = len(full.content)
        victim = sorted(live.files)[-1]  # near the end of the archive
        live.put(victim, os.urandom(len(live.files[victim]) or 1))
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream(
                "GET", "/v1/zip", params=PARAMS, headers={"Range": f"bytes={size // 2}-"}
            ) as response,
        ):
            assert response.status_code == 206  # the headers went out: the cut is the failure
            for _ in response.iter_raw():
                pass


@pytest.mark.parametrize("kind", SOURCES)
def test_a_range_never_tees_into_the_cache_nor_starts_a_job(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """With a cache and a selection over `ZIPEDGE_STREAM_MAX_BYTES` (a plain GET becomes a
    job), ranges are answered live: 206 with the right bytes, no cache object, no job."""
    cache = tmp_path / "cache"
    env = {"ZIPEDGE_CACHE": f"file://{cache}", "ZIPEDGE_STREAM_MAX_BYTES": "1000"}
    with running(kind, request, tmp_path, **env) as live, live.client() as client:
        head = client.head("/v1/zip", params=PARAMS)
        assert head.status_code == 202  # over the streaming limit: a whole archive is a job
        # A first range of never-read photos teaches every CRC (the layout then changes:
        # see the test below); another client's range is of the settled, descriptor-free
        # layout (this one's resumes stay in the layout it began with).
        first = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=0-"})
        assert first.status_code == 206, first.text[:300]
        client.headers["X-Forwarded-For"] = "10.0.0.9"
        whole = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=0-"})
        assert whole.status_code == 206 and not any(descriptor_flags_of(whole.content))
        size = len(whole.content)
        assert whole.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
        part = client.get(
            "/v1/zip", params=PARAMS, headers={"Range": "bytes=100-5099", "If-Range": whole.headers["etag"]}
        )
        assert part.status_code == 206 and part.content == whole.content[100:5100]
        tail = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=-3000"})  # the directory
        assert tail.status_code == 206 and len(tail.content) == 3000
        settled(live)
        assert [p for p in cache.rglob("*") if p.is_file()] == []
        assert live.app.state.services.streams.building == 0
        assert client.get("/v1/jobs").json()["jobs"] == []
        # The same checks see a job and its archive once a plain GET asks for one.
        job = client.get("/v1/zip", params=PARAMS)
        assert job.status_code == 202
        assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [job.json()["id"]]
    path = tmp_path / "ranged.zip"
    path.write_bytes(whole.content)
    check_archive(path, live.expected())


def test_a_download_begun_with_a_range_resumes_in_the_same_layout(live: Live) -> None:
    """A download manager that opens with `Range: bytes=0-` and resumes without `If-Range`
    (as `curl -C -` does) must get the rest of the archive it started; the first range
    taught CRCs, so the selection's current layout is another one."""
    with live.client() as client:
        begun = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=0-"})
        assert begun.status_code == 206
        rest = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=100-5099"})
        assert rest.status_code == 206
        assert rest.headers["etag"] == begun.headers["etag"]
        assert rest.content == begun.content[100:5100]
        again = client.get(
            "/v1/zip", params=PARAMS, headers={"Range": "bytes=100-5099", "If-Range": begun.headers["etag"]}
        )
        assert again.status_code == 206 and again.content == begun.content[100:5100]


needs_clients = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("aria2c")), reason="curl and aria2c (Debian curl, aria2)"
)


class Cutoff:
    """A TCP relay in front of the service that passes the first `limit` bytes of the
    answer, then holds the connection (the client waits as on a stalled network) until
    `drop`, which closes both sides: the service sees its client leave mid-archive."""

    def __init__(self, upstream: str, limit: int) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self._upstream = (host, int(port))
        self._limit = limit
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._listener]
        self.held = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(self._upstream)
        self._sockets += [client, server]
        threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
        passed = 0
        with contextlib.suppress(OSError):
            while passed < self._limit and (data := server.recv(min(65536, self._limit - passed))):
                client.sendall(data)
                passed += len(data)
        self.held.set()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)

    def drop(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@needs_clients
def test_curl_resumes_a_really_dropped_live_download(live: Live, tmp_path: Path) -> None:
    """A plain `curl` GET whose connection stalls a third of the way and is then killed
    (the service sees its client leave), then `curl -C -` continues the file: the result
    is byte for byte the archive the first GET started, although that stream taught the
    index CRCs and the selection's current layout is another one by now."""
    path = f"/v1/zip?from={PARAMS['from']}&to={PARAMS['to']}"
    out, headers = tmp_path / "resumed.zip", tmp_path / "first.headers"
    with live.client() as client:
        size = int(client.head("/v1/zip", params=PARAMS).headers["content-length"])
    cutoff = Cutoff(live.url, size // 3)
    command = ["curl", "-sS", "-f", "-D", str(headers), "-o", str(out), cutoff.url + path]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert cutoff.held.wait(60), "the service sent nothing"
        deadline = time.monotonic() + 60
        while not out.exists() or out.stat().st_size < size // 3 - 65536:  # curl writes in blocks
            assert first.poll() is None, "curl ended before it was interrupted"
            assert time.monotonic() < deadline, "curl wrote too little"
            time.sleep(0.02)
    finally:
        first.kill()
        first.wait()
        cutoff.drop()
    dropped = out.stat().st_size
    assert 0 < dropped < size
    etag = next(
        line.split(":", 1)[1].strip()
        for line in headers.read_text().splitlines()
        if line.lower().startswith("etag:")
    )
    done = subprocess.run(
        ["curl", "-sS", "-f", "-C", "-", "-o", str(out), live.url + path], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size == size
    settled(live)  # the dropped stream has ended and recorded what it learned
    with live.client() as client:
        # The whole archive of that ETag, as a full download of it has it.
        whole = client.get("/v1/zip", params=PARAMS, headers={"Range": "bytes=0-", "If-Range": etag})
        current = client.head("/v1/zip", params=PARAMS)
    assert whole.status_code == 206 and whole.headers["etag"] == etag and len(whole.content) == size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(whole.content).hexdigest()
    assert current.headers["etag"] != etag  # the dropped GET taught CRCs: a new layout now
    check_archive(out, live.expected())


def answers(metrics: str, status: str) -> float:
    import re

    pattern = rf'^zipedge_requests_total{{method="GET",route="zip_range",status="{status}"}} ([0-9.e+]+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@needs_clients
def test_aria2c_with_four_connections_gets_the_same_bytes(live: Live, tmp_path: Path) -> None:
    for i in range(8):  # big enough for aria2c to split it four ways
        live.add(f"2025/01/02/ZZ{i}.jpg", os.urandom(700_000 + i))
    url = f"{live.url}/v1/zip?from={PARAMS['from']}&to={PARAMS['to']}"
    plain = tmp_path / "plain.zip"
    split = tmp_path / "split"
    aria2c(url, split / "fresh.zip")  # a first download: cut from one layout, all four parts
    check_archive(split / "fresh.zip", live.expected())
    # With every CRC learned, the layout no longer changes: a plain download and a
    # four-connection one are the very same bytes.
    subprocess.run(["curl", "-sS", "-f", "-o", str(plain), url], check=True)
    before = settled(live)
    aria2c(url, split / "a.zip")
    after = settled(live)
    got = (split / "a.zip").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(plain.read_bytes()).hexdigest()
    check_archive(split / "a.zip", live.expected())
    # One connection starts as a plain GET; the others are ranges, never full streams.
    assert answers(after, "200") - answers(before, "200") <= 1
    assert answers(after, "206") - answers(before, "206") >= 2


def aria2c(url: str, out: Path) -> None:
    command = ["aria2c", "-x4", "-s4", "-k1M", "--min-split-size=1M", "--allow-overwrite=true", "-q"]
    command += ["--file-allocation=none", "-d", str(out.parent), "-o", out.name, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def settled(live: Live) -> str:
    """The metrics once every request is over and counted (a connection aria2c dropped
    ends, and is counted, a moment after aria2c exits)."""
    deadline = time.monotonic() + 30
    with live.client() as client:
        last = ""
        while True:
            now = "\n".join(line for line in client.get("/metrics").text.splitlines() if "zip_range" in line)
            if now == last and not live.app.state.services.streams.active:  # type: ignore[attr-defined]
                return now
            assert time.monotonic() < deadline, "requests did not settle"
            last = now
            time.sleep(0.2)
