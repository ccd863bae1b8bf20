"""A loopback TCP proxy that records every HTTP request passing through it.

The ranges part puts it between the service and SeaweedFS to count what a ranged answer
reads: each request's method, target and `Range` header, in the order the service sent
them. Bytes are forwarded untouched both ways; only the client's side is parsed, head by
head (a request with a `Content-Length` body has that body skipped; a chunked body ends
the parsing of that connection, which is reported in `unparsed`, since the service's GETs
and LISTs have no body). It runs in the bench process: the runs it counts are not timed.

    async with CountingProxy("127.0.0.1", 8333) as proxy:
        ...  # point the service at proxy.url
        mark = len(proxy.requests)
        ...  # one request to the service
        proxy.requests[mark:]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from types import TracebackType

READ_BYTES = 256 * 1024

#: A request head longer than this is not HTTP the proxy understands.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # as sent: path and query
    range: str | None  # the Range header, if any
    at: float = 0.0  # time.monotonic() when its head had arrived


class RequestHeads:
    """The request heads of one client connection, from its bytes in any chunking."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # body bytes of the last request still to pass
        self.unparsed: str | None = None  # why parsing stopped, if it did

    def feed(self, data: bytes) -> list[Request]:
        if self.unparsed is not None:
            return []
        self._buf += data
        found: list[Request] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    break
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    self.unparsed = f"no end of request head in {len(self._buf)} bytes"
                break
            head = bytes(self._buf[:end]).decode("latin-1")
            del self._buf[: end + 4]
            request, headers = _parse_head(head)
            if request is None:
                self.unparsed = f"not an HTTP request line: {head[:80]!r}"
                break
            found.append(request)
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.unparsed = f"chunked body after {request.method} {request.target}"
                break
            self._skip = int(headers.get("content-length", "0") or 0)
        return found


def _parse_head(head: str) -> tuple[Request | None, dict[str, str]]:
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None, {}
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(parts[0], parts[1], headers.get("range"), time.monotonic()), headers


class CountingProxy:
    """Listen on a free loopback port, forward to the upstream, record every request."""

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.requests: list[Request] = []
        self.unparsed: list[str] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    @property
    def last_request_at(self) -> float:
        return self.requests[-1].at if self.requests else 0.0

    async def __aenter__(self) -> CountingProxy:
        self._server = await asyncio.start_server(self._on_client, self.listen_host, 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _on_client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        u_writer: asyncio.StreamWriter | None = None
        heads = RequestHeads()
        try:
            u_reader, u_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pipe(c_reader, u_writer, heads))
                tg.create_task(self._pipe(u_reader, c_writer, None))
        except* (OSError, asyncio.CancelledError):
            pass
        finally:
            if heads.unparsed is not None:
                self.unparsed.append(heads.unparsed)
            for w in (c_writer, u_writer):
                if w is not None:
                    w.transport.abort()
            self._handlers.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, heads: RequestHeads | None
    ) -> None:
        while data := await reader.read(READ_BYTES):
            if heads is not None:
                self.requests += heads.feed(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
