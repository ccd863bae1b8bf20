"""bench/delay_proxy.py passes bytes intact both ways and closes cleanly (no timing asserted)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# bench/ is not part of the installed package; import it from the checkout.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.delay_proxy import DelayProxy  # noqa: E402

DELAY_S = 0.005


def _payload(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


class Upstream:
    """Reads the whole request (until EOF), then answers with its hash and a reply payload."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.received: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        self.received.append(data)
        seed = int.from_bytes(hashlib.sha256(data).digest()[:4], "big")
        writer.write(hashlib.sha256(data).digest() + _payload(seed, 2 * 1024 * 1024 + 17))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    async with up.server:
        yield up


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Write in uneven pieces so chunk boundaries differ on each side of the proxy.
    view = memoryview(request)
    step = 70_001
    for i in range(0, len(view), step):
        writer.write(view[i : i + step])
        await writer.drain()
    writer.write_eof()  # half-close: the reply must still come back through the proxy
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply


def _expected_reply(request: bytes) -> bytes:
    digest = hashlib.sha256(request).digest()
    return digest + _payload(int.from_bytes(digest[:4], "big"), 2 * 1024 * 1024 + 17)


async def test_bytes_intact_both_ways(upstream: Upstream) -> None:
    request = _payload(1, 3 * 1024 * 1024 + 5)
    async with DelayProxy("127.0.0.1", upstream.port, DELAY_S) as proxy:
        reply = await _exchange(proxy.port, request)
        assert proxy.stats.connections == 1
        assert proxy.stats.bytes_upstream == len(request)
        assert proxy.stats.bytes_downstream == len(reply)
    assert upstream.received == [request]
    assert reply == _expected_reply(request)


async def test_concurrent_connections(upstream: Upstream) -> None:
    requests = [_payload(10 + i, 100_000 * (i + 1)) for i in range(8)]
    async with DelayProxy("127.0.0.1", upstream.port, DELAY_S) as proxy:
        replies = await asyncio.gather(*(_exchange(proxy.port, r) for r in requests))
        assert proxy.stats.connections == len(requests)
    assert sorted(upstream.received) == sorted(requests)
    assert replies == [_expected_reply(r) for r in requests]


async def test_zero_delay_and_empty_request(upstream: Upstream) -> None:
    async with DelayProxy("127.0.0.1", upstream.port, 0.0, handshake=False) as proxy:
        reply = await _exchange(proxy.port, b"")
    assert reply == _expected_reply(b"")


async def test_upstream_refused_closes_client() -> None:
    # A port that was just free: nothing listens there.
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = int(probe.sockets[0].getsockname()[1])
    probe.close()
    await probe.wait_closed()
    async with DelayProxy("127.0.0.1", dead_port, DELAY_S) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"hello")
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass  # an abort is as good as a close here
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionResetError:
            pass


async def test_stop_with_idle_connection_open(upstream: Upstream) -> None:
    proxy = DelayProxy("127.0.0.1", upstream.port, DELAY_S)
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"partial request, never finished")
    await writer.drain()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(proxy.stop(), timeout=5)  # must not hang on the idle client
    try:
        assert await reader.read() == b""
    except ConnectionResetError:
        pass
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionResetError:
        pass


async def test_standalone_cli(upstream: Upstream) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.delay_proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        f"127.0.0.1:{upstream.port}",
        "--delay-ms",
        "5",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode()
        assert line.startswith("listening 127.0.0.1:"), line
        port = int(line.strip().rpartition(":")[2])
        request = _payload(7, 1024 * 1024)
        assert await _exchange(port, request) == _expected_reply(request)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()
    assert b"connections=1 " in err
