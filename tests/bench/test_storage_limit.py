"""bench/storage_limit.py: the curl config, one `curl --parallel` run against a tiny local
HTTP server (keep-alive, no SeaweedFS), and the checks on what curl reports. No timing
is asserted, only that the figures are read correctly."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.servers import RawServer

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import storage_limit  # noqa: E402
from bench.dataset import ObjectSpec, make_dataset  # noqa: E402
from bench.s3 import S3Endpoint  # noqa: E402
from bench.storage_limit import StorageLimitError, Transfer  # noqa: E402

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


def size_in_path(path: str) -> int | None:
    """`/obj/<size>` -> size; anything else is not found."""
    return int(path[5:]) if path.startswith("/obj/") and path[5:].isdigit() else None


class ObjectServer(RawServer):
    """HTTP/1.1 with keep-alive: answers `size_of(path)` bytes, or 404 when that is None.
    Counts connections and requests."""

    def __init__(self, size_of: Callable[[str], int | None] = size_in_path) -> None:
        self.size_of = size_of
        super().__init__()
        self.connections = 0
        self.requests: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                target = head.split(b" ", 2)[1].decode()
                self.requests.append(target)
                size = self.size_of(urlsplit(target).path)
                status, body = ("200 OK", b"x" * size) if size is not None else ("404 Not Found", b"none")
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        finally:
            writer.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def objects() -> AsyncIterator[ObjectServer]:
    async with ObjectServer() as server:
        yield server


def test_config_pairs_every_url_with_an_output_in_order(tmp_path: Path) -> None:
    urls = ["http://h:1/b/a?X-Amz-Signature=1&x=%2F", 'http://h:1/b/"q"\\z']
    path = storage_limit.write_config(tmp_path / "c.curl", urls)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        'url = "http://h:1/b/a?X-Amz-Signature=1&x=%2F"',
        'output = "/dev/null"',
        'url = "http://h:1/b/\\"q\\"\\\\z"',  # quotes and backslashes escaped
        'output = "/dev/null"',
    ]
    with pytest.raises(ValueError):
        storage_limit.config_text(["http://h/a\nurl = http://evil/"])


def test_parse_and_check_transfers() -> None:
    got = storage_limit.parse_transfers("1 200 20 0\n0 200 10 1\n\n")
    assert got == [Transfer(1, 200, 20, 0), Transfer(0, 200, 10, 1)]
    storage_limit.check_transfers(got, [10, 20])
    with pytest.raises(StorageLimitError, match="missing"):
        storage_limit.check_transfers(got[:1], [10, 20])
    with pytest.raises(StorageLimitError, match="HTTP 403"):
        storage_limit.check_transfers([Transfer(0, 403, 10, 1)], [10])
    with pytest.raises(StorageLimitError, match="expected 10"):
        storage_limit.check_transfers([Transfer(0, 200, 9, 1)], [10])
    with pytest.raises(StorageLimitError, match="twice"):
        storage_limit.check_transfers([Transfer(0, 200, 10, 1)] * 2, [10, 10])
    with pytest.raises(StorageLimitError, match="write-out"):
        storage_limit.parse_transfers("0 200 ten 1\n")


@needs_curl
async def test_one_curl_process_fetches_everything_on_few_connections(
    objects: ObjectServer, tmp_path: Path
) -> None:
    sizes = [1000 + 137 * i for i in range(40)]
    config = storage_limit.write_config(tmp_path / "c.curl", [objects.url(f"/obj/{n}") for n in sizes])
    batch = await asyncio.to_thread(storage_limit.run_batch, config, 4, sizes)
    assert sorted(t.index for t in batch.transfers) == list(range(len(sizes)))
    assert all(t.status == 200 and t.size == sizes[t.index] for t in batch.transfers)
    assert len(objects.requests) == len(sizes)
    # --parallel-max 4: four connections, kept alive for all 40 GETs.
    assert batch.connections == objects.connections <= 4
    assert batch.seconds > 0 and 0 <= batch.system_s <= batch.cpu_s


@needs_curl
async def test_a_failed_transfer_fails_the_run(objects: ObjectServer, tmp_path: Path) -> None:
    config = storage_limit.write_config(tmp_path / "c.curl", [objects.url("/obj/10"), objects.url("/nope")])
    with pytest.raises(StorageLimitError, match="#1: HTTP 404"):
        await asyncio.to_thread(storage_limit.run_batch, config, 2, [10, 14])
    config = storage_limit.write_config(tmp_path / "c.curl", [objects.url("/obj/10")])
    with pytest.raises(StorageLimitError, match="expected 11"):
        await asyncio.to_thread(storage_limit.run_batch, config, 2, [11])


@needs_curl
async def test_curl_failure_is_reported(tmp_path: Path) -> None:
    config = storage_limit.write_config(tmp_path / "c.curl", ["http://127.0.0.1:9/unreachable"])
    with pytest.raises(StorageLimitError, match="exited"):
        await asyncio.to_thread(storage_limit.run_batch, config, 1, [1])


def test_presigned_urls_are_path_style_sigv4_for_the_given_host() -> None:
    ep = S3Endpoint("http://127.0.0.1:4567", "AKID", "secret", "eu-west-1", "bucket")
    objs = [ObjectSpec("root/2025/01/01/a b.bin", "2025/01/01/a b.bin", 5)]
    (url,) = storage_limit.presigned_urls(ep, objs)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "http",
        "127.0.0.1:4567",
        "/bucket/root/2025/01/01/a%20b.bin",
    )
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert (
        query["X-Amz-Credential"][0].startswith("AKID/")
        and "/eu-west-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    )
    assert query["X-Amz-Expires"] == [str(storage_limit.URL_EXPIRES_S)]
    assert len(query["X-Amz-Signature"][0]) == 64


@needs_curl
async def test_storage_limit_runs_levels_and_meters_the_server() -> None:
    """StorageLimit end to end: presigned URLs of a dataset's keys to the tiny server (which
    ignores the signature), this process standing in for the storage server's CPU."""
    ds = make_dataset("t", 12, 2048, 2, "root")
    sizes = {f"/bucket/{o.key}": o.size for o in ds.objects}
    async with ObjectServer(sizes.get) as server:
        ep = S3Endpoint(server.url(""), "AKID", "secret", "us-east-1", "bucket")
        async with storage_limit.StorageLimit(ep, ds, (2, 4), {"storage": os.getpid()}) as limit:
            for n in (2, 4):
                await limit.run(n)
    summaries = list(limit)
    assert [s.concurrency for s in summaries] == [2, 4]
    for s in summaries:
        assert (s.kind, s.client, s.objects, s.bytes) == ("storage-limit", "curl", 12, 12 * 2048)
        assert len(s.runs_s) == len(s.cpu_s) == len(s.server_cpu_s) == len(s.connections) == 1
        assert set(s.server_cpu_s[0]) == {"storage"} and s.cpu_ms_per_object is not None
        assert s.connections[0] <= s.concurrency
    assert len(server.requests) == 24
    assert all("X-Amz-Signature=" in r for r in server.requests)
