"""bench/count_proxy.py: request heads parsed from any chunking, bodies skipped, and a
keep-alive exchange through the proxy recorded request by request with bytes intact (a
tiny local HTTP server, no SeaweedFS)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

import httpx

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.count_proxy import CountingProxy, RequestHeads  # noqa: E402

STREAM = (
    b"GET /b/k/a.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
    b"PUT /b/k/c.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\nbody\r\n\r\nGET /"
    b"GET /b?list-type=2&prefix=k%2F HTTP/1.1\r\nHost: x\r\n\r\n"
)


def test_heads_from_any_chunking_and_bodies_skipped() -> None:
    for step in (1, 3, 7, len(STREAM)):
        heads = RequestHeads()
        found = []
        for i in range(0, len(STREAM), step):
            found += heads.feed(STREAM[i : i + step])
        assert [(r.method, r.target, r.range) for r in found] == [
            ("GET", "/b/k/a.bin", "bytes=10-19"),
            ("PUT", "/b/k/c.bin", None),  # its body holds "\r\n\r\nGET /": skipped, not parsed
            ("GET", "/b?list-type=2&prefix=k%2F", None),
        ]
        assert heads.unparsed is None


def test_what_cannot_be_followed_stops_the_parsing_and_says_why() -> None:
    heads = RequestHeads()
    got = heads.feed(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert [r.target for r in got] == ["/x"]
    assert heads.unparsed is not None and "chunked" in heads.unparsed
    assert heads.feed(b"GET /y HTTP/1.1\r\n\r\n") == []
    garbage = RequestHeads()
    assert garbage.feed(b"\x16\x03\x01 TLS hello\r\n\r\n") == []
    assert garbage.unparsed is not None and "not an HTTP request line" in garbage.unparsed


class Objects:
    """HTTP/1.1 keep-alive: the body is sha256(path) repeated to `size` bytes, or the
    asked Range of it (206)."""

    SIZE = 300_000

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    @staticmethod
    def body(path: str) -> bytes:
        unit = hashlib.sha256(path.encode()).digest()
        return (unit * (Objects.SIZE // len(unit) + 1))[: Objects.SIZE]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode()
                except asyncio.IncompleteReadError:
                    return
                path = head.split(" ", 2)[1]
                body, status = self.body(path), "200 OK"
                for line in head.split("\r\n")[1:]:
                    if line.lower().startswith("range: bytes="):
                        first, last = line.split("=", 1)[1].split("-")
                        body, status = body[int(first) : int(last) + 1], "206 Partial Content"
                writer.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


async def test_a_keep_alive_exchange_is_recorded_request_by_request_with_bytes_intact() -> None:
    objects = Objects()
    objects.server = await asyncio.start_server(objects.handle, "127.0.0.1", 0)
    async with objects.server, CountingProxy("127.0.0.1", objects.port) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
            whole = await client.get("/b/k/one.bin")
            part = await client.get("/b/k/two.bin", headers={"Range": "bytes=1000-1999"})
            listing = await client.get("/b", params={"list-type": "2", "prefix": "k/"})
        assert whole.content == Objects.body("/b/k/one.bin")
        assert part.status_code == 206 and part.content == Objects.body("/b/k/two.bin")[1000:2000]
        assert listing.status_code == 200
        assert [(r.method, r.target, r.range) for r in proxy.requests] == [
            ("GET", "/b/k/one.bin", None),
            ("GET", "/b/k/two.bin", "bytes=1000-1999"),
            ("GET", "/b?list-type=2&prefix=k%2F", None),
        ]
        assert proxy.connections == objects.connections == 1  # kept alive through the proxy
        assert proxy.last_request_at == proxy.requests[-1].at > 0
        assert proxy.unparsed == []
