"""`zipedge stack` end to end, as a user runs it: a subprocess that prints its URLs, serves
health and a date-range ZIP of the demo photos through edge → nginx → service, redirects
repeat requests to the edge cache, and stops every process it started on SIGINT."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.servers import port_is_free
from tests.zipcheck import check_with_zipfile, sha256

pytestmark = pytest.mark.integration

COMPONENTS = {"s3", "redis", "service", "nginx", "edge"}
#: Deadlines for things that must happen (failures, not timing assertions).
START_DEADLINE_S = 180.0
STOP_DEADLINE_S = 120.0
CACHE_DEADLINE_S = 60.0
DAYS, PER_DAY = 2, 10


@dataclass
class Stack:
    proc: subprocess.Popen[str]
    urls: dict[str, str]
    directory: Path
    stderr: list[str]
    readers: list[threading.Thread]

    @property
    def edge(self) -> str:
        return self.urls["edge"]

    def processes(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


def _pump(stream: object, lines: queue.Queue[str | None], keep: list[str] | None = None) -> None:
    assert hasattr(stream, "readline")
    for line in iter(stream.readline, ""):
        if keep is not None:
            keep.append(line)
        lines.put(line)
    lines.put(None)


@contextlib.contextmanager
def running_stack(directory: Path, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """`zipedge stack` in `directory` (with `env` added to the environment), once it has
    printed every URL; SIGINT at the end if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "stack", "--dir", str(directory),
         "--days", str(DAYS), "--per-day", str(PER_DAY)],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a Ctrl-C on pytest must not reach it twice
    )  # fmt: skip
    out: queue.Queue[str | None] = queue.Queue()
    err: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + START_DEADLINE_S
        while not COMPONENTS <= urls.keys():
            try:
                line = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"zipedge stack printed no URLs in time:\n{''.join(stderr)}")
            if line is None:
                proc.wait(STOP_DEADLINE_S)
                pytest.fail(f"zipedge stack exited ({proc.returncode}):\n{''.join(stderr)}")
            name, sep, url = line.strip().partition(": ")
            assert sep and url, f"not a '<name>: <url>' line: {line!r}"
            urls[name] = url
        yield Stack(proc, urls, directory, stderr, readers)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


#: Not the default day: the staging lifecycle rule must follow the service's setting.
UPLOAD_GRACE_S = 2 * 86400 + 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"ZIPEDGE_UPLOAD_GRACE_S": str(UPLOAD_GRACE_S)}
    with running_stack(tmp_path_factory.mktemp("stack"), env) as running:
        yield running


def date_range() -> dict[str, str]:
    # wider than the photos' days, so a run across midnight UTC still covers them
    today = datetime.now(UTC).date()
    return {"from": str(today - timedelta(days=DAYS + 1)), "to": str(today + timedelta(days=1))}


def demo_files(stack: Stack) -> dict[str, str]:
    """The demo photos of `date_range()` (the folder also has the README's example days)."""
    demo = stack.directory / "demo"
    span = date_range()
    days = [
        f"{day:%Y/%m/%d}" for day in _days(date.fromisoformat(span["from"]), date.fromisoformat(span["to"]))
    ]
    return {
        path.relative_to(demo).as_posix(): sha256(path.read_bytes())
        for path in sorted(p for day in days for p in (demo / day).glob("*.jpg"))
    }


def _days(start: date, end: date) -> Iterator[date]:
    while start <= end:
        yield start
        start += timedelta(days=1)


def test_prints_one_url_per_component(stack: Stack) -> None:
    assert COMPONENTS <= stack.urls.keys()
    for name, url in stack.urls.items():
        parts = urlsplit(url)
        assert parts.scheme == ("redis" if name == "redis" else "http"), url
        assert parts.hostname == "127.0.0.1" and parts.port
    assert len({urlsplit(url).port for url in stack.urls.values()}) == len(stack.urls)


def test_health_through_edge_nginx_and_service(stack: Stack) -> None:
    with httpx.Client(base_url=stack.edge, timeout=30) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"].values()) == {"ok"}
        assert "redis" in ready.json()["checks"] and "cache" in ready.json()["checks"]


def test_date_range_streams_through_the_edge(stack: Stack, tmp_path: Path) -> None:
    expected = demo_files(stack)
    # yesterday's photos are all taken, today's only up to now
    assert (DAYS - 1) * PER_DAY <= len(expected) <= DAYS * PER_DAY
    with httpx.Client(base_url=stack.edge, timeout=60) as client:
        response = client.get("/v1/zip", params=date_range())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "x-cache-status" not in response.headers  # the API is never cached at the edge
    path = tmp_path / "range.zip"
    path.write_bytes(response.content)
    check_with_zipfile(path, expected)


def test_repeat_request_is_redirected_to_the_edge_cache(stack: Stack) -> None:
    params = date_range()
    with httpx.Client(base_url=stack.edge, timeout=60) as client:
        first = client.get("/v1/zip", params=params)
        assert first.status_code in (200, 302)
        # The cache object is committed once the first stream has completed; then every
        # request in the signing window is redirected to the same presigned URL.
        deadline = time.monotonic() + CACHE_DEADLINE_S
        while (again := client.get("/v1/zip", params=params)).status_code != 302:
            assert again.status_code == 200
            assert time.monotonic() < deadline, "never redirected to the cache"
            time.sleep(0.2)
        location = again.headers["location"]
        assert location.startswith(f"{stack.edge}/zipedge-cache/archives/")
        assert "X-Amz-Signature=" in location
        assert client.get("/v1/zip", params=params).headers["location"] == location  # stable

        miss = client.get(location)
        assert miss.status_code == 200
        assert miss.headers["x-cache-status"] in ("MISS", "HIT")  # HIT if an earlier run filled it
        # The same photos; maybe not the same bytes: a stream that did not win the build
        # lock may have sent a newer layout (CRCs learned meanwhile) than the one cached.
        assert miss.headers["etag"] == again.headers["etag"]
        if first.status_code == 200:
            assert members(miss.content) == members(first.content)
        hit = client.get(location)
        assert hit.headers["x-cache-status"] == "HIT"
        assert hit.content == miss.content
        part = client.get(location, headers={"Range": "bytes=10-99"})
        assert part.status_code == 206
        assert part.content == hit.content[10:100]


def test_readme_example_days_are_served_too(stack: Stack, tmp_path: Path) -> None:
    with httpx.Client(base_url=stack.edge, timeout=60) as client:
        head = client.head("/v1/zip", params={"from": "2025-01-01", "to": "2025-01-05"})
    assert head.status_code in (200, 302), head.text
    assert (stack.directory / "demo/2025/01/05/MH12AB1234-083015.jpg").is_file()


def test_the_bucket_rules_are_read_back(stack: Stack) -> None:
    """What the stack installs on its bucket is what SeaweedFS keeps: the staging backstop
    (expiring after the configured grace, in whole days) and the page's upload CORS rule."""
    import boto3
    from botocore.config import Config

    from service.stack.local import SOURCE_BUCKET
    from service.stack.seaweedfs import DEFAULT_ACCESS_KEY, DEFAULT_REGION, DEFAULT_SECRET_KEY
    from service.stack.seed import cors_rule

    client = boto3.client(
        "s3",
        endpoint_url=stack.urls["s3"],
        region_name=DEFAULT_REGION,
        aws_access_key_id=DEFAULT_ACCESS_KEY,
        aws_secret_access_key=DEFAULT_SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )
    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=SOURCE_BUCKET)["Rules"]
        cors = client.get_bucket_cors(Bucket=SOURCE_BUCKET)["CORSRules"]
    finally:
        client.close()
    [staging] = [rule for rule in rules if rule.get("ID") == "zipedge-staging"]
    assert staging["Status"] == "Enabled"
    assert staging["Filter"] == {"Prefix": "photos/_staging/"}  # ZIPEDGE_STAGING's default
    assert staging["Expiration"] == {"Days": 3}  # 2 days and a second, rounded up
    assert staging["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
    assert cors == [cors_rule([stack.edge])]


def test_sigint_stops_everything(stack: Stack) -> None:
    children = stack.processes()
    names = {" ".join(p.cmdline()) for p in children}
    assert any("weed" in n for n in names) and any("redis-server" in n for n in names)
    assert sum("nginx: master" in n for n in names) == 2
    assert any("service serve" in n for n in names)
    ports = [p for url in stack.urls.values() if (p := urlsplit(url).port)]

    stack.proc.send_signal(signal.SIGINT)
    code = stack.proc.wait(STOP_DEADLINE_S)
    for reader in stack.readers:
        reader.join(10)  # everything it printed, up to its exit
    assert code == 0, "".join(stack.stderr)

    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child
    assert all(port_is_free(port) for port in ports)
    log = "".join(stack.stderr)
    # stopped in reverse start order (the worker, once `zipedge worker` exists, after nginx)
    order = [line.split("stopped ")[1].strip() for line in log.splitlines() if ": stopped " in line]
    assert [name for name in order if name != "worker"] == ["edge", "nginx", "service", "redis", "s3"]
    if "worker" in order:
        assert order.index("worker") == 2


def test_a_component_that_dies_stops_everything(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        children = stack.processes()
        [redis] = [p for p in children if p.name() == "redis-server"]
        redis.kill()  # as if it crashed
        code = stack.proc.wait(STOP_DEADLINE_S)
        for reader in stack.readers:
            reader.join(10)
    assert code == 1
    assert "redis exited unexpectedly" in "".join(stack.stderr)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child


def test_zipedge_source_folder_is_uploaded_instead_of_demo_photos(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    files = {
        "2024/02/29/KA01AB0001-101010.jpg": b"leap day",
        "2024/02/29/night/KA01AB0002-235959.jpg": b"deeper folders count",
        "2024/03/01/KA01AB0003-000001.jpg": b"next day",
        "2024/03/01/.hidden.jpg": b"never a photo",
        "notes/2024/03/01/x.jpg": b"not a day folder",
    }
    for key, data in files.items():
        (photos / key).parent.mkdir(parents=True, exist_ok=True)
        (photos / key).write_bytes(data)
    served = {k: sha256(v) for k, v in sorted(files.items()) if k.startswith("2024/") and ".hidden" not in k}

    with running_stack(tmp_path / "stack", {"ZIPEDGE_SOURCE": f"file://{photos}"}) as stack:
        with httpx.Client(base_url=stack.edge, timeout=60) as client:
            response = client.get("/v1/zip", params={"from": "2024-02-29", "to": "2024-03-01"})
        log = "".join(stack.stderr)
    assert f"uploaded 3 photos from {photos} (ZIPEDGE_SOURCE; no demo photos)" in log, log
    assert "from=2024-02-29&to=2024-03-01" in log  # the hint names the folder's days
    assert not (tmp_path / "stack" / "demo").exists()
    assert response.status_code == 200, response.text
    path = tmp_path / "folder.zip"
    path.write_bytes(response.content)
    check_with_zipfile(path, served)


def test_zipedge_source_in_s3_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "stack", "--dir", str(tmp_path)],
        env={**os.environ, "ZIPEDGE_SOURCE": "s3://bucket/photos"},
        capture_output=True,
        text=True,
        timeout=STOP_DEADLINE_S,
    )
    assert result.returncode == 2
    assert "ZIPEDGE_SOURCE" in result.stderr and "file:///abs/dir" in result.stderr
    assert "starting" not in result.stderr


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        return {info.filename: opened.read(info) for info in opened.infolist()}
