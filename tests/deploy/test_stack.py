"""`zipedge stack` end to end, as a user runs it: a subprocess that prints its URLs, serves
health and a date-range ZIP of the demo photos through edge → nginx → service, redirects
repeat requests to the edge cache, and stops every process it started on SIGINT."""

from __future__ import annotations

import contextlib
import io
import queue
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
def running_stack(directory: Path) -> Iterator[Stack]:
    """`zipedge stack` in `directory`, once it has printed every URL; SIGINT at the end
    if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "stack", "--dir", str(directory),
         "--days", str(DAYS), "--per-day", str(PER_DAY)],
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def date_range() -> dict[str, str]:
    # wider than the photos' days, so a run across midnight UTC still covers them
    today = datetime.now(UTC).date()
    return {"from": str(today - timedelta(days=DAYS + 1)), "to": str(today + timedelta(days=1))}


def demo_files(stack: Stack) -> dict[str, str]:
    demo = stack.directory / "demo"
    return {
        path.relative_to(demo).as_posix(): sha256(path.read_bytes()) for path in sorted(demo.rglob("*.jpg"))
    }


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
    assert len(expected) == DAYS * PER_DAY
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


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        assert opened.testzip() is None
        return {info.filename: opened.read(info) for info in opened.infolist()}
