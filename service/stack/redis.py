"""A throwaway Debian `redis-server` on loopback, without persistence."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from service.stack.ports import HOST, free_port
from service.stack.process import ManagedProcess

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3


def redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if found is None:
        raise FileNotFoundError("redis-server not found: apt-get install redis-server")
    return found


def ping(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis on 127.0.0.1:`port` answers PING (not while it is loading)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ManagedProcess):
    """`redis-server` on a free loopback port with `dir` as its working directory."""

    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, data_dir: str | os.PathLike[str], *, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary
        self.port = 0
        self._keep_port = False
        self.log_path = self.data_dir / "redis.log"
        super().__init__()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("redis-server is not started")
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self._proc is not None:
            raise RuntimeError("redis-server already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._launch(
            "redis-server",
            spawn=self._spawn,
            ready=lambda: ping(self.port),
            deadline=time.monotonic() + timeout,
            attempts=_START_ATTEMPTS,
        )

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop and start again on the same port (what a crash and a supervisor do): every
        connection a client pooled is now dead."""
        self.stop()
        self._keep_port = True
        try:
            self.start(timeout)
        finally:
            self._keep_port = False

    def _spawn(self) -> None:
        if not (self._keep_port and self.port):
            self.port = free_port()
        args = [
            self.binary or redis_binary(),
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", "",  # stdout, which goes to our log file
        ]  # fmt: skip
        self._popen(args, cwd=self.data_dir)
