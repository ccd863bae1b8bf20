"""The processes a benchmark run needs: SeaweedFS, the delay proxy, the zipedge service.

Each one is its own process, as in production: on 2 cores, running the proxy or the
service inside the measuring process would make them share one GIL with the client and
distort every figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from bench.s3 import S3Endpoint

ROOT = Path(__file__).resolve().parent.parent

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@contextlib.contextmanager
def seaweedfs(data_dir: Path, bucket: str) -> Iterator[tuple[S3Endpoint, int | None]]:
    """A throwaway SeaweedFS (service/stack/seaweedfs.py): its endpoint and pid."""
    from service.stack.seaweedfs import SeaweedFS

    with SeaweedFS(data_dir, bucket=bucket) as sw:
        yield (
            S3Endpoint(
                endpoint_url=sw.endpoint_url,
                access_key=sw.access_key,
                secret_key=sw.secret_key,
                region=sw.region,
                bucket=sw.bucket,
            ),
            sw.pid,
        )


def free_port() -> int:
    from service.stack.ports import free_port as _free_port

    return _free_port()


class DelayProxyProcess:
    """`python -m bench.delay_proxy` in front of `upstream`; `url` is where to connect."""

    def __init__(self, upstream: S3Endpoint, delay_ms: float, log_path: Path) -> None:
        self._upstream = upstream
        self._delay_ms = delay_ms
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.url = ""
        self.stats = ""

    async def __aenter__(self) -> DelayProxyProcess:
        self._log = self._log_path.open("wb")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.delay_proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            f"{self._upstream.host}:{self._upstream.port}",
            "--delay-ms",
            str(self._delay_ms),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
        )
        assert self._proc.stdout is not None
        try:
            line = (await asyncio.wait_for(self._proc.stdout.readline(), READY_TIMEOUT_S)).decode()
        except TimeoutError:
            line = ""
        if not line.startswith("listening "):
            await self.__aexit__(None, None, None)
            raise RuntimeError(f"delay proxy did not start (see {self._log_path}): {line!r}")
        host, _, port = line.split()[1].rpartition(":")
        self.url = f"http://{host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
            lines = self._log_path.read_text(errors="replace").strip().splitlines()
            self.stats = lines[-1] if lines else ""


def zipedge_command() -> list[str]:
    """The console script from this venv (`make install`), else from PATH."""
    candidate = Path(sys.executable).parent / "zipedge"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("zipedge")
    if found is None:
        raise FileNotFoundError("zipedge console script not found: run `make install` first")
    return [found]


class ZipedgeServer:
    """`zipedge serve` as a subprocess, streaming from `source` on `s3`, no archive cache."""

    def __init__(
        self,
        s3: S3Endpoint,
        source: str,
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self._s3 = s3
        self._source = source
        self._log_path = log_path
        self._extra_env = dict(extra_env or {})
        self._command = command
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("service not started")
        return self._proc.pid

    def _env(self) -> dict[str, str]:
        # The parent's own AWS_*/ZIPEDGE_* settings must not leak into the measurement.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZIPEDGE_"))}
        env.update(self._s3.env())
        env.update(
            {
                "ZIPEDGE_SOURCE": self._source,
                "ZIPEDGE_CACHE": "",  # no cache: every request is a cold stream
                "ZIPEDGE_REDIS_URL": "",
                "AWS_EC2_METADATA_DISABLED": "true",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self._extra_env)
        return env

    async def __aenter__(self) -> ZipedgeServer:
        self.port = free_port()
        cmd = [
            *(self._command or zipedge_command()),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._log = self._log_path.open("wb")
        self._proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            env=self._env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(
                        f"zipedge exited with {self._proc.returncode} ({self._log_path}):\n{self.log_tail()}"
                    )
                try:
                    resp = await client.get(f"{self.base_url}/readyz")
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"zipedge not ready after {READY_TIMEOUT_S} s ({last}; {self._log_path}):\n"
                        + self.log_tail()
                    )
                await asyncio.sleep(0.1)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"
