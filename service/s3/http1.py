"""A lean HTTP/1.1 GET client for object bodies: keep-alive connections on asyncio
protocols, responses parsed by httptools (llhttp, the C parser uvicorn uses).

aiohttp costs about 0.2 ms of CPU per request in Python before the body moves (a URL
object, header multidicts, a request and a response object, a StreamReader, a timeout
handle rescheduled on every read); on two cores shared with the storage server that
decided the throughput of a stream of photos. Here a GET is one request string written
to an idle connection and one protocol object collecting the answer: the status, the
headers as a plain dict (lower-case names) and the body pieces, handed over in reads of
the size asked for.

What it keeps from a full client: at most `limit` connections in use (more callers wait),
idle connections reused last-in first-out and dropped after `KEEPALIVE_S`, a connect
timeout and a read timeout (no byte for `timeout_s`), flow control (reading pauses while
more than `high_water` bytes wait for their reader), TLS for https, a request on a reused
connection the server had already closed retried once on a new one (nothing of its answer
had arrived), and a connection whose answer was not read to the end closed rather than
reused. What it leaves out: proxies, redirects, compression, cookies, 1xx answers: the S3
data plane needs none of them. Every failure to talk to the server is a `TransportError`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Mapping
from typing import cast

import httptools

from service.constants import HTTP1_KEEPALIVE_S

__all__ = ["Client", "Response", "TransportError"]


class TransportError(Exception):
    """The server could not be reached, closed the connection early, sent something that
    is not HTTP, or sent nothing for the read timeout."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the answer in progress on it."""

    def __init__(self, client: Client, key: tuple[str, str]) -> None:
        self._client = client
        self._loop = client.loop
        self.key = key  #: (scheme, host): which requests it may carry
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._reset_answer()

    def _reset_answer(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received_any = False
        self.error: BaseException | None = None
        self.pieces: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self._until_eof = True  # neither a length nor chunked: the body ends with the connection
        self._waiter: asyncio.Future[None] | None = None
        self._last_read = self._loop.time()
        self._wanted = 0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"not an HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.headers_done and self._until_eof and exc is None:
            self.on_message_complete()  # the body ended with the connection, as announced
            return
        self._fail(TransportError(f"connection closed{'' if exc is None else f': {exc}'}"), close=False)

    def pause_writing(self) -> None:  # a request is a few hundred bytes
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in ("content-length", "transfer-encoding"):
            self._until_eof = False
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)
        self.buffered += len(body)
        if self.buffered >= self._client.high_water and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        if self._waiter is not None and self.buffered >= self._wanted:
            self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        # Asked now: once the message is over the parser answers for the next one.
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- for Response ----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException, *, close: bool = True) -> None:
        if self.error is None:
            self.error = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.error)
        if close:
            self.close()

    async def wait(self, wanted: int) -> None:
        """Until the headers are in (`wanted` 0) or `wanted` body bytes are buffered, the
        answer is complete, or it failed; `TransportError` after `timeout_s` without a byte."""
        if self.error is not None:
            raise self.error
        self._wanted = wanted
        self._waiter = self._loop.create_future()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        self._timer = self._loop.call_at(self._last_read + self._client.timeout_s, self._check_timeout)
        try:
            await self._waiter
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._waiter = None

    def _check_timeout(self) -> None:
        due = self._last_read + self._client.timeout_s
        if self._loop.time() < due:  # bytes came in meanwhile: wait for the rest
            self._timer = self._loop.call_at(due, self._check_timeout)
            return
        self._fail(TransportError(f"no answer for {self._client.timeout_s:g} s"))

    def take(self, n: int) -> bytes:
        """Up to `n` buffered body bytes (all of them if fewer are buffered)."""
        pieces = self.pieces
        first = pieces[0]
        if len(first) == n:
            pieces.popleft()
            self.buffered -= n
            return first
        if len(first) > n:
            pieces[0] = first[n:]
            self.buffered -= n
            return first[:n]
        taken: list[bytes] = []
        size = 0
        while pieces and size + len(pieces[0]) <= n:
            piece = pieces.popleft()
            taken.append(piece)
            size += len(piece)
        if pieces and size < n:
            head = pieces[0]
            taken.append(head[: n - size])
            pieces[0] = head[n - size :]
            size = n
        self.buffered -= size
        return b"".join(taken)

    def reusable(self) -> bool:
        return (
            self.complete and not self.closed and self.error is None and not self.pieces and self.keep_alive
        )

    def prepare(self) -> None:
        """Ready for the next request on this connection."""
        self._reset_answer()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer whose headers are in; `read` the body, then `release` (always)."""

    __slots__ = ("_client", "_conn", "headers", "status")

    def __init__(self, client: Client, conn: _Connection) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def read(self, n: int) -> bytes:
        """The next `n` body bytes; fewer only at the end of the body (b"" once it is over).
        `TransportError` if the connection fails or falls silent first."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("response already released")
        while conn.buffered < n and not conn.complete:
            await conn.wait(n)
        if not conn.buffered:
            return b""
        return conn.take(n)

    def release(self) -> None:
        """Give the connection back (kept for the next request if the whole answer was
        read and the server keeps it open), or close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(conn)


class Client:
    """Keep-alive GETs to any number of hosts, at most `limit` requests at a time."""

    def __init__(self, *, limit: int, timeout_s: float, high_water: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout_s = timeout_s
        self.high_water = high_water
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, str], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        #: connections opened so far (tests: keep-alive reuse)
        self.connections_opened = 0

    async def get(self, scheme: str, host: str, target: str, headers: Mapping[str, str]) -> Response:
        """`GET target` on `scheme://host` (host as in the Host header: name[:port]) with
        `headers`; returns once the answer's headers are in."""
        lines = [f"GET {target} HTTP/1.1\r\nhost: {host}\r\nuser-agent: zipedge\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} holds a line break")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        request = "".join(lines).encode("latin-1")
        await self._slots.acquire()
        try:
            return await self._exchange(scheme, host, request)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(self, scheme: str, host: str, request: bytes) -> Response:
        idle = self._idle.get((scheme, host))
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > HTTP1_KEEPALIVE_S:
                conn.close()
                continue
            try:
                return await self._send(conn, request)
            except TransportError:
                if conn.received_any:
                    raise
                # The server had closed it while it sat idle: once more on a new one.
        conn = await self._connect(scheme, host)
        return await self._send(conn, request)

    async def _send(self, conn: _Connection, request: bytes) -> Response:
        conn.prepare()
        assert conn.transport is not None
        try:
            conn.transport.write(request)
            while not conn.headers_done:
                await conn.wait(0)
        except BaseException:
            conn.close()
            raise
        return Response(self, conn)

    async def _connect(self, scheme: str, host: str) -> _Connection:
        name, _, port_text = host.rpartition(":") if host.rpartition(":")[2].isdigit() else (host, "", "")
        name = name.strip("[]")
        port = int(port_text) if port_text else (443 if scheme == "https" else 80)
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.timeout_s):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self, (scheme, host)),
                    name,
                    port,
                    ssl=context,
                    server_hostname=name if context else None,
                )
        except TimeoutError as exc:
            raise TransportError(f"no connection to {host} within {self.timeout_s:g} s") from exc
        except OSError as exc:  # refused, unreachable, name not known, TLS failures
            raise TransportError(f"cannot connect to {host}: {exc}") from exc
        self.connections_opened += 1
        return conn

    def _release(self, conn: _Connection) -> None:
        self._slots.release()
        if self._closed or not conn.reusable():
            conn.close()
            return
        conn.idle_since = self.loop.time()
        self._idle.setdefault(conn.key, []).append(conn)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
