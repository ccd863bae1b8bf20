"""The benchmark's external clients (curl, wrk) and the parsers around them, against real
local servers. Nothing here asserts a timing: only that the figures are read correctly."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.servers import RawServer

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import curl, wrk  # noqa: E402
from bench.cached import cache_statuses, parse_zip_statuses  # noqa: E402
from bench.stack import TrivialRedirectServer  # noqa: E402
from bench.stream import BenchError, curl_stream_once, file_crc32  # noqa: E402

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")

BODY = os.urandom(3 * 1024 * 1024 + 17)


class TinyServer(RawServer):
    """A raw HTTP/1.1 server: `GET /zip` answers BODY as a zip, anything else 404."""

    def __init__(self, content_type: str = "application/zip", status: int = 200) -> None:
        self.content_type = content_type
        self.status = status
        super().__init__()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        ok = request.startswith(b"GET /zip ")
        body = BODY if ok else b"nope"
        status = f"{self.status} X" if ok else "404 Not Found"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {self.content_type if ok else 'text/plain'}\r\n"
            f'Content-Length: {len(body)}\r\nETag: "abc123"\r\nConnection: close\r\n\r\n'
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()


@pytest.fixture
async def tiny() -> AsyncIterator[TinyServer]:
    async with TinyServer() as server:
        yield server


def test_parse_write_out() -> None:
    text = '206\n0.001234\n0.002\n1\n1\napplication/zip\n"abc"\n\nbytes 0-0/31000\nHIT\n'
    got = curl.parse_write_out(text)
    assert (got.status, got.size, got.content_length, got.etag) == (206, 1, 1, '"abc"')
    assert got.ttfb_s == pytest.approx(0.001234)
    assert got.range_total == 31000
    assert got.cache_status == "HIT"
    assert curl.parse_write_out("302\n0.1\n0.1\n0\n\n\n\nhttp://x/y\n\n\n").content_length is None


@needs_curl
async def test_curl_stream_once_counts_and_keeps_the_body(tiny: TinyServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{tiny.port}/zip"
    timed = await curl_stream_once(url, os.getpid())
    assert (timed.client, timed.received, timed.content_length, timed.etag) == (
        "curl",
        len(BODY),
        len(BODY),
        '"abc123"',
    )
    assert timed.crc32 is None  # timed runs are tied to the checked copy by length and ETag
    assert 0 < timed.ttfb_s <= timed.total_s
    assert set(timed.rss_at) == {"25%", "50%", "75%", "100%"} and timed.samples >= 1
    kept = tmp_path / "copy.zip"
    await curl_stream_once(url, os.getpid(), kept)
    assert file_crc32(kept) == zlib.crc32(BODY)


@needs_curl
async def test_curl_stream_once_refuses_what_is_not_a_zip_stream(tmp_path: Path) -> None:
    async with TinyServer(content_type="text/html") as html:
        with pytest.raises(BenchError, match="content-type"):
            await curl_stream_once(f"http://127.0.0.1:{html.port}/zip", os.getpid())
    async with TinyServer(status=202) as job:
        with pytest.raises(BenchError, match="HTTP 202"):
            await curl_stream_once(f"http://127.0.0.1:{job.port}/zip", os.getpid())


@needs_curl
async def test_curl_fetch_reports_curl_failures() -> None:
    with pytest.raises(curl.CurlError, match="exit"):
        await curl.fetch("http://127.0.0.1:9/unreachable", max_time_s=5)


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:1/v1/zip
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  ...
  1000 requests in 1.00s, 1.00MB read
Requests/sec:   1000.00
WRK_SUMMARY {"requests": 1000, "duration_us": 1000000, "bytes": 700000, "errors": {"connect": 0, \
"read": 0, "write": 0, "status": 0, "timeout": 0}, "latency_us": {"min": 100, "mean": 1200.5, \
"max": 9000, "stdev": 300.0, "p50": 1100, "p75": 1300, "p90": 1500, "p99": 3000, "p99_9": 8000}}
"""


def test_wrk_parse() -> None:
    got = wrk.parse(WRK_OUTPUT, url="u", threads=2, connections=32)
    assert (got.requests, got.bytes, got.error_count) == (1000, 700000, 0)
    assert (got.p50_ms, got.p99_ms, got.max_ms) == (1.1, 3.0, 9.0)
    assert got.rps == pytest.approx(1000.0)
    assert got.mb_per_s == pytest.approx(0.7)
    with pytest.raises(wrk.WrkError):
        wrk.parse("no summary here", url="u", threads=1, connections=1)


@needs_wrk
@needs_curl
async def test_trivial_app_under_wrk(tmp_path: Path) -> None:
    location = "http://127.0.0.1:9/zipedge-cache/x.zip?X-Amz-Signature=abc"
    async with TrivialRedirectServer(location, tmp_path / "trivial.log") as app:
        url = f"{app.base_url}/v1/zip?from=2025-01-01&to=2025-01-30"
        probe = await curl.fetch(url)
        assert (probe.status, probe.location) == (302, location)
        result = await wrk.run(url, threads=1, connections=2, duration_s=1, log=tmp_path / "wrk.log")
    assert result.requests > 0 and result.error_count == 0
    assert result.p50_ms <= result.p99_ms <= result.max_ms
    assert "WRK_SUMMARY" in (tmp_path / "wrk.log").read_text()


def test_parse_zip_statuses() -> None:
    text = (
        "# HELP zipedge_requests_total HTTP requests by route and status.\n"
        'zipedge_requests_total{route="zip_range",method="GET",status="302"} 1234.0\n'
        'zipedge_requests_total{route="zip_range",method="GET",status="200"} 1.0\n'
        'zipedge_requests_total{route="zip_range",method="HEAD",status="302"} 7.0\n'
        'zipedge_requests_total{route="metrics",method="GET",status="200"} 3.0\n'
    )
    assert parse_zip_statuses(text) == {"302": 1234, "200": 1}


def test_cache_statuses_reads_only_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    old = '127.0.0.1 "GET /c/x.zip?a HTTP/1.1" 200 10 cache=MISS rt=0.010\n'
    log.write_text(old + '127.0.0.1 "GET /c/x.zip?a HTTP/1.1" 200 10 cache=HIT rt=0.001\n' * 3)
    assert cache_statuses(log, len(old)) == {"HIT": 3}
