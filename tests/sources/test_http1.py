"""The lean HTTP/1.1 client of the object GETs (service/s3/http1.py) against a scripted
server: keep-alive reuse, a stale idle connection retried, bodies cut short or never
sent, chunked and unframed bodies, flow control, and the connection limit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from service.s3.http1 import Client, TransportError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """`handler` serves each connection; every connection is closed when the block ends."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await srv.wait_closed()


async def request_of(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answer(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


async def read_all(client: Client, host: str, target: str = "/b/k", n: int = 1 << 16) -> bytes:
    response = await client.get("http", host, target, {"x-amz-date": "20250101T000000Z"})
    try:
        parts = []
        while chunk := await response.read(n):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        response.release()


async def test_requests_share_one_kept_alive_connection() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                seen.append(await request_of(reader))
                writer.write(answer(b"x" * 100_000))

    async with server(handler) as host:
        client = Client(limit=4, timeout_s=5, high_water=1 << 20)
        for _ in range(5):
            assert await read_all(client, host) == b"x" * 100_000
        assert client.connections_opened == 1
        await client.aclose()
    assert seen[0].startswith(b"GET /b/k HTTP/1.1\r\nhost: " + host.encode())
    assert b"x-amz-date: 20250101T000000Z\r\n" in seen[0]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(answer(b"hello"))  # keep-alive promised, then closed after one answer
        await writer.drain()
        writer.close()

    async with server(handler) as host:
        client = Client(limit=4, timeout_s=5, high_water=1 << 20)
        assert await read_all(client, host) == b"hello"
        await asyncio.sleep(0.05)
        assert await read_all(client, host) == b"hello"
        assert client.connections_opened == 2
        await client.aclose()


async def test_a_body_cut_short_and_a_silent_server_fail() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nxx")
        await asyncio.sleep(5)

    client = Client(limit=4, timeout_s=0.3, high_water=1 << 20)
    async with server(cut) as host:
        with pytest.raises(TransportError, match="closed"):
            await read_all(client, host)
    async with server(silent) as host:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TransportError, match="no answer"):
            await read_all(client, host)
        assert loop.time() - started < 2
    async with server(silent) as host:  # nothing at all after the request
        with pytest.raises(TransportError):
            async with asyncio.timeout(2):
                await read_all(client, host)
    await client.aclose()


async def test_refused_and_not_http() -> None:
    client = Client(limit=1, timeout_s=1, high_water=1 << 20)
    async with server(lambda r, w: asyncio.sleep(0)) as host:
        pass  # closed: nothing listens there any more
    with pytest.raises(TransportError, match="cannot connect"):
        await read_all(client, host)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async with server(garbage) as host:
        with pytest.raises(TransportError, match="not an HTTP answer"):
            await read_all(client, host)
    await client.aclose()


async def test_chunked_and_unframed_bodies() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()

    async def unframed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    client = Client(limit=2, timeout_s=2, high_water=1 << 20)
    async with server(chunked) as host:
        assert await read_all(client, host, n=4) == b"hello world"
    async with server(unframed) as host:
        assert await read_all(client, host) == b"until the end"
    await client.aclose()


async def test_reading_pauses_while_the_reader_does_not_read() -> None:
    size = 8 << 20

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await request_of(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size >> 16):
            writer.write(b"z" * (1 << 16))
            await writer.drain()

    async with server(big) as host:
        client = Client(limit=1, timeout_s=5, high_water=256 << 10)
        response = await client.get("http", host, "/big", {})
        first = await response.read(1 << 16)
        await asyncio.sleep(0.3)  # the server could send it all meanwhile
        conn = response._conn
        assert conn is not None and conn.buffered < 2 << 20  # high water + what was in flight
        rest = [first]
        while chunk := await response.read(1 << 18):
            rest.append(chunk)
        response.release()
        assert sum(map(len, rest)) == size
        await client.aclose()


async def test_at_most_limit_requests_at_once_and_an_abandoned_answer_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await request_of(reader)
                writer.write(answer(b"y" * 300_000))
                await writer.drain()

    async with server(handler) as host:
        client = Client(limit=2, timeout_s=5, high_water=1 << 20)
        first = await client.get("http", host, "/a", {})
        second = await client.get("http", host, "/b", {})
        third = asyncio.ensure_future(client.get("http", host, "/c", {}))
        await asyncio.sleep(0.1)
        assert not third.done()  # waits for a slot
        await first.read(10)
        first.release()  # abandoned mid-body: closed, not handed to /c
        await (await third).read(10)
        assert client.connections_opened == 3
        second.release()
        (await third).release()
        await client.aclose()


async def test_a_line_break_in_a_header_is_refused() -> None:
    client = Client(limit=1, timeout_s=1, high_water=1 << 20)
    with pytest.raises(ValueError, match="line break"):
        await client.get("http", "127.0.0.1:9", "/", {"if-match": '"abc"\r\nx-evil: 1'})
    await client.aclose()


async def test_an_answer_in_small_pieces_then_another_on_the_same_connection() -> None:
    body = bytes(range(256)) * 40

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await request_of(reader)
            whole = answer(body, 'ETag: "abc"')
            for i in range(0, len(whole), 7):  # the header block split anywhere
                writer.write(whole[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0) if i % 700 else await asyncio.sleep(0.001)

    async with server(trickle) as host:
        client = Client(limit=1, timeout_s=5, high_water=1 << 20)
        for _ in range(2):
            response = await client.get("http", host, "/k", {})
            assert response.status == 200 and response.headers["etag"] == '"abc"'
            parts = []
            while chunk := await response.read(3000):
                parts.append(chunk)
            response.release()
            assert b"".join(parts) == body and max(map(len, parts)) == 3000
        assert client.connections_opened == 1
        await client.aclose()


async def test_bytes_past_the_content_length_make_the_connection_unusable() -> None:
    async def overlong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                await request_of(reader)
                writer.write(answer(b"12345") + b"junk")
                await writer.drain()

    async with server(overlong) as host:
        client = Client(limit=1, timeout_s=5, high_water=1 << 20)
        assert await read_all(client, host) == b"12345"
        assert await read_all(client, host) == b"12345"
        assert client.connections_opened == 2  # not reused after the junk
        await client.aclose()
