"""A loopback TCP proxy that adds a fixed one-way delay in each direction, for any bandwidth.

This kernel has no netem, so the benchmark models "S3 is 20 ms away" with this proxy
between the service and SeaweedFS: every chunk read from one side is stamped with
`receipt time + delay` and written to the other side when that time comes. Reading and
writing are separate tasks joined by a queue, so many chunks are in flight at once and
the delay never caps throughput (sleeping inline in the read loop would allow one chunk
per delay, i.e. 256 KiB / 10 ms = 26 MB/s). A new connection also costs one round trip
before the upstream sees its first byte, as a TCP handshake would.

In process::

    async with DelayProxy("127.0.0.1", 8333, delay_s=0.010) as proxy:
        ...  # talk to proxy.url

Standalone (prints ``listening 127.0.0.1:PORT`` once ready, stops on SIGINT/SIGTERM)::

    python -m bench.delay_proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:8333 --delay-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import signal
import sys
from collections import deque
from dataclasses import dataclass
from types import TracebackType

#: Bytes asked for per read. Large enough that per-chunk overhead (a queue item, a timer)
#: stays small at hundreds of MB/s.
READ_BYTES = 256 * 1024

#: StreamReader buffer limit: asyncio pauses the socket at twice this much unread data.
STREAM_LIMIT = 1024 * 1024

#: Bytes one direction may hold while they wait out their delay. Above it the proxy stops
#: reading, so a slow receiver slows the sender (TCP backpressure) instead of growing
#: memory. 32 MiB in 10 ms is 3.3 GB/s, far above anything measured here.
MAX_QUEUED_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class ProxyStats:
    connections: int = 0
    bytes_upstream: int = 0  # client -> upstream
    bytes_downstream: int = 0  # upstream -> client


class _Pipe:
    """One direction of one connection: a reader task stamps and queues, a writer task delays."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay_s: float,
        count: _Counter,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._delay_s = delay_s
        self._count = count
        # (due time, data) in receipt order, so due times only grow; None marks the
        # sender's EOF, which is delayed like data.
        self._items: deque[tuple[float, bytes | None]] = deque()
        self._queued_bytes = 0
        self._nonempty = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def read_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._queued_bytes >= MAX_QUEUED_BYTES:
                self._room.clear()
                await self._room.wait()
            data = await self._reader.read(READ_BYTES)
            due = loop.time() + self._delay_s
            self._items.append((due, data or None))
            self._nonempty.set()
            if not data:
                return
            self._queued_bytes += len(data)

    async def write_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._items:
                self._nonempty.clear()
                await self._nonempty.wait()
            wait = self._items[0][0] - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # Everything due by now goes out in one burst with one drain.
            now = loop.time()
            while self._items and self._items[0][0] <= now:
                _, data = self._items.popleft()
                if data is None:
                    await self._writer.drain()
                    if self._writer.can_write_eof():
                        self._writer.write_eof()
                    return
                self._writer.write(data)
                self._queued_bytes -= len(data)
                self._count.add(len(data))
            if self._queued_bytes < MAX_QUEUED_BYTES:
                self._room.set()
            await self._writer.drain()


class _Counter:
    def __init__(self, stats: ProxyStats, upstream: bool) -> None:
        self._stats = stats
        self._upstream = upstream

    def add(self, n: int) -> None:
        if self._upstream:
            self._stats.bytes_upstream += n
        else:
            self._stats.bytes_downstream += n


class DelayProxy:
    """Listen on `listen_host:listen_port` (0 = any free port) and forward to the upstream."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        delay_s: float,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        handshake: bool = True,
    ) -> None:
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._handshake = handshake
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.stats = ProxyStats()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.listen_host, self._listen_port, limit=STREAM_LIMIT
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        # On 3.11 wait_closed() does not wait for open connections (3.12 waits for them
        # all, forever if a client idles): end them here, then wait for the listener.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        self._stopping = False

    async def __aenter__(self) -> DelayProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _on_client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.stats.connections += 1
        try:
            await self._serve(c_reader, c_writer)
        except asyncio.CancelledError:
            # stop() cancelled us: end normally, since on 3.11 asyncio's stream callback
            # logs a cancelled connection handler as an unhandled error.
            if not self._stopping:
                raise
        finally:
            self._handlers.discard(task)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        u_writer: asyncio.StreamWriter | None = None
        clean = False
        try:
            if self._handshake:
                # SYN out and SYN-ACK back: the client's first bytes are read (and stamped)
                # only after this, so the upstream sees them 3 one-way delays after connect.
                await asyncio.sleep(2 * self.delay_s)
            u_reader, u_writer = await asyncio.open_connection(
                self.upstream_host, self.upstream_port, limit=STREAM_LIMIT
            )
            up = _Pipe(c_reader, u_writer, self.delay_s, _Counter(self.stats, upstream=True))
            down = _Pipe(u_reader, c_writer, self.delay_s, _Counter(self.stats, upstream=False))
            # A TaskGroup cancels the other three tasks as soon as one side fails.
            async with asyncio.TaskGroup() as tg:
                for coro in (up.read_side(), up.write_side(), down.read_side(), down.write_side()):
                    tg.create_task(coro)
            clean = True
        except* OSError:
            pass  # a reset or refused connection: abort both sides below
        finally:
            for w in (c_writer, u_writer):
                if w is None:
                    continue
                if clean:
                    w.close()
                else:
                    w.transport.abort()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await w.wait_closed()


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def _serve_forever(args: argparse.Namespace) -> None:
    listen_host, listen_port = args.listen
    up_host, up_port = args.upstream
    proxy = DelayProxy(
        up_host,
        up_port,
        args.delay_ms / 1000,
        listen_host=listen_host,
        listen_port=listen_port,
        handshake=not args.no_handshake,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with proxy:
        # The parent waits for this exact line to learn the port (useful with port 0).
        print(f"listening {proxy.listen_host}:{proxy.port}", flush=True)
        await stop.wait()
    s = proxy.stats
    print(
        f"connections={s.connections} bytes_upstream={s.bytes_upstream} "
        f"bytes_downstream={s.bytes_downstream}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delay_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_host_port, default=("127.0.0.1", 0), help="HOST:PORT (port 0: any)")
    parser.add_argument("--upstream", type=_host_port, required=True, help="HOST:PORT")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="one-way delay per direction")
    parser.add_argument("--no-handshake", action="store_true", help="no extra round trip on connect")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)
    # uvloop (installed with uvicorn[standard]) moves bytes with less CPU, which matters
    # on a 2-core machine shared with the service and SeaweedFS.
    have_uvloop = importlib.util.find_spec("uvloop") is not None
    use_uvloop = args.loop == "uvloop" or (args.loop == "auto" and have_uvloop)
    if use_uvloop:
        import uvloop

        uvloop.run(_serve_forever(args))
    else:
        asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
