"""Run an ASGI app under a real uvicorn server in a thread, on a free loopback port.

Real sockets matter here: the honest-failure and disconnect behaviours live in the
server's handling of an incomplete response, which an in-process transport hides.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Self

import uvicorn

from service.stack.ports import free_port


def port_is_free(port: int) -> bool:
    """Nothing listens on it (TIME_WAIT leftovers do not count, as for any server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """`options` go to `uvicorn.Config` (e.g. what `zipedge serve` adds: `server_limits`)."""
    port = free_port()
    # ws="none": zipedge serves no WebSockets, so uvicorn need not load a websockets library.
    options = {"ws": "none", **options}
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


class RawServer:
    """A hand-written asyncio TCP server on a free loopback port, for answers no real
    server gives; subclasses write `handle`."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
