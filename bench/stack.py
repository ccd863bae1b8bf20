"""The processes a benchmark run needs: SeaweedFS, the delay proxy, the zipedge service
and workers, the trivial redirect app.

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
from typing import IO, Self

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

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


class _Child:
    """A subprocess writing to one log: stopped with SIGTERM (then SIGKILL), log tail for errors."""

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self._proc.pid

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        await _terminate(self._proc, sig)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class DelayProxyProcess(_Child):
    """`python -m bench.delay_proxy` in front of `upstream`; `url` is where to connect."""

    def __init__(self, upstream: S3Endpoint, delay_ms: float, log_path: Path) -> None:
        super().__init__(log_path)
        self._upstream = upstream
        self._delay_ms = delay_ms
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

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        # The proxy prints its byte counters as its last log line when it stops.
        try:
            lines = self._log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
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


class ServerProcess(_Child):
    """An HTTP server as a subprocess on a free loopback port, ready when `ready_path`
    answers 200; SIGTERM (then SIGKILL) on exit."""

    name = "server"
    ready_path = "/healthz"

    def __init__(self, log_path: Path) -> None:
        super().__init__(log_path)
        self.port = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self.port = free_port()
        self._log = self._log_path.open("wb")
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            cwd=ROOT,
            env=self.env(),
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
                        f"{self.name} exited with {self._proc.returncode} ({self._log_path}):\n"
                        + self.log_tail()
                    )
                try:
                    resp = await client.get(f"{self.base_url}{self.ready_path}")
                    if resp.status_code == 200:
                        return
                    last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.name} not ready after {READY_TIMEOUT_S} s ({last}; {self._log_path}):\n"
                        + self.log_tail()
                    )
                await asyncio.sleep(0.1)


async def _terminate(proc: asyncio.subprocess.Process | None, sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask `proc` to stop, wait, then kill it and whatever processes it started (the
    workers of `zipedge serve --workers N` would outlive a killed supervisor)."""
    if proc is not None and proc.returncode is None:
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def zipedge_env(s3: S3Endpoint, source: str, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of `zipedge serve`/`worker`: `source` on `s3`, no cache, no Redis,
    unless `extra_env` says otherwise."""
    # The parent's own AWS_*/ZIPEDGE_* settings (and proxies) must not leak into the measurement.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "ZIPEDGE_")) and not k.lower().endswith("_proxy")
    }
    env.update(s3.env())
    env.update(
        {
            "ZIPEDGE_SOURCE": source,
            "ZIPEDGE_CACHE": "",  # no cache: every request is a cold stream
            "ZIPEDGE_REDIS_URL": "",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    return env


class ZipedgeServer(ServerProcess):
    """`zipedge serve` as a subprocess, streaming from `source` on `s3`; no archive cache
    and no Redis unless `extra_env` sets them; one process unless `workers` says more."""

    name = "zipedge"
    ready_path = "/readyz"

    def __init__(
        self,
        s3: S3Endpoint,
        source: str,
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(log_path)
        self._s3 = s3
        self._source = source
        self._extra_env = dict(extra_env or {})
        self._command = command
        #: `--workers`: always given, since the default depends on Redis and the cores
        self.workers = workers

    def env(self) -> dict[str, str]:
        return zipedge_env(self._s3, self._source, self._extra_env)

    def command(self) -> list[str]:
        return [
            *(self._command or zipedge_command()),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]


class TrivialRedirectServer(ServerProcess):
    """`python -m bench.trivial_app`: a constant 302, the redirect figure's reference."""

    name = "trivial app"

    def __init__(self, location: str, log_path: Path) -> None:
        super().__init__(log_path)
        self._location = location

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.trivial_app",
            "--port",
            str(self.port),
            "--location",
            self._location,
        ]


class ZipedgeWorker(_Child):
    """`zipedge worker --concurrency N` as a subprocess. It has no HTTP side: the caller
    knows it is ready once it shows up in the saq queue's worker list."""

    def __init__(self, env: Mapping[str, str], log_path: Path, concurrency: int = 1) -> None:
        super().__init__(log_path)
        self._env = dict(env)
        self._concurrency = concurrency

    @property
    def exited(self) -> bool:
        return self._proc is None or self._proc.returncode is not None

    async def __aenter__(self) -> ZipedgeWorker:
        self._log = self._log_path.open("wb")
        self._proc = await asyncio.create_subprocess_exec(
            *zipedge_command(),
            "worker",
            "--concurrency",
            str(self._concurrency),
            cwd=ROOT,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        return self


class ZipedgeWorkers:
    """`count` workers, started together and stopped together: an idle saq worker takes
    up to its longest upkeep timer (10 s) to exit on SIGTERM, so stopping them one after
    another would add that much per worker to the run."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, name: str, count: int) -> None:
        self.workers = [ZipedgeWorker(env, log_dir / f"worker-{name}-{i}.log") for i in range(1, count + 1)]

    async def __aenter__(self) -> list[ZipedgeWorker]:
        try:
            for worker in self.workers:
                await worker.__aenter__()
        except BaseException:
            await self.__aexit__()
            raise
        return self.workers

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(w.__aexit__() for w in self.workers))
