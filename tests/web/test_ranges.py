"""Range on the live stream, before any cache exists: any single range is exactly the
bytes a full GET of that ETag has there, fetching only what overlaps it; If-Range is
honoured; a resumed or four-connection download by real clients (curl, aria2c) gives the
right archive; a range whose objects changed fails honestly."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.sources.memory import MemorySource
from tests.servers import serve
from tests.zipcheck import check_archive, sha256

PARAMS = {"from": "2025-01-01", "to": "2025-01-02"}


@dataclass
class Live:
    url: str
    root: Path
    files: dict[str, bytes]
    app: object

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def expected(self) -> dict[str, str]:
        return {k: sha256(v) for k, v in sorted(self.files.items())}


def write(root: Path, count: int = 40, seed: int = 1) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        key = f"2025/01/0{1 + i % 2}/MH12AB{i:04d}-0830{i % 60:02d}.jpg"
        files[key] = os.urandom(rng.choice([0, 1, 999, 30_000, 70_000]))
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[key])
        os.utime(path, (1_736_000_000 + i, 1_736_000_000 + i))
    return files


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    root = tmp_path / "photos"
    files = write(root)
    settings = Settings.from_env(
        {"ZIPEDGE_SOURCE": f"file://{root}", "ZIPEDGE_CACHE": "", "ZIPEDGE_DATA_DIR": str(tmp_path / "var")}
    )
    app = create_app(settings)
    with serve(app) as url:
        yield Live(url, root, files, app)


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
    found += [tuple(sorted(rng.sample(range(size), 2))) for _ in range(25)]  # type: ignore[misc]
    return found


def test_any_single_range_is_the_same_slice_of_the_full_archive(live: Live) -> None:
    with live.client() as client:
        full = client.get("/v1/zip", params=PARAMS)
        assert full.status_code == 200 and full.headers["accept-ranges"] == "bytes"
        etag, size = full.headers["etag"], len(full.content)
        assert any(descriptor_flags_of(full.content))  # a first archive: descriptors
        for first, last in windows(size, full.content):
            part = client.get("/v1/zip", params=PARAMS, headers={"Range": f"bytes={first}-{last}"})
            assert part.status_code == 206, (first, last, part.text[:200])
            assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
            assert part.headers["etag"] == etag
            assert int(part.headers["content-length"]) == last - first + 1
            assert part.content == full.content[first : last + 1], (first, last)
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
        (live.root / victim).write_bytes(os.urandom(len(live.files[victim]) or 1))
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream(
                "GET", "/v1/zip", params=PARAMS, headers={"Range": f"bytes={size // 2}-"}
            ) as response,
        ):
            assert response.status_code == 206  # the headers went out: the cut is the failure
            for _ in response.iter_raw():
                pass


needs_clients = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("aria2c")), reason="curl and aria2c (Debian curl, aria2)"
)


@needs_clients
def test_curl_resumes_an_interrupted_live_download(live: Live, tmp_path: Path) -> None:
    url = f"{live.url}/v1/zip?from={PARAMS['from']}&to={PARAMS['to']}"
    out = tmp_path / "resumed.zip"
    # Interrupted: curl stops after a third of the archive (--max-filesize would refuse
    # outright; a byte limit through the range does the same as a dropped connection).
    with live.client() as client:
        size = int(client.head("/v1/zip", params=PARAMS).headers["content-length"])
        first = client.get("/v1/zip", params=PARAMS, headers={"Range": f"bytes=0-{size // 3}"})
    out.write_bytes(first.content)
    done = subprocess.run(
        ["curl", "-sS", "-f", "-C", "-", "-o", str(out), url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size == size
    check_archive(out, live.expected())


def answers(metrics: str, status: str) -> float:
    import re

    pattern = rf'^zipedge_requests_total{{method="GET",route="zip_range",status="{status}"}} ([0-9.e+]+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@needs_clients
def test_aria2c_with_four_connections_gets_the_same_bytes(live: Live, tmp_path: Path) -> None:
    for i in range(8):  # big enough for aria2c to split it four ways
        data = os.urandom(700_000 + i)
        live.files[f"2025/01/02/ZZ{i}.jpg"] = data
        (live.root / f"2025/01/02/ZZ{i}.jpg").write_bytes(data)
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
    done = subprocess.run(
        [
            "aria2c",
            "-x4",
            "-s4",
            "-k1M",
            "--min-split-size=1M",
            "--allow-overwrite=true",
            "-q",
            "--file-allocation=none",
            "-d",
            str(split),
            "-o",
            "a.zip",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
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
    import time

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
