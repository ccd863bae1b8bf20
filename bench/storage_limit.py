"""The storage limit: how fast the storage hands out exactly the objects a stream fetches.

One `curl --parallel --parallel-max N -K <config>` process GETs every object of the
dataset, through presigned SigV4 URLs (botocore's presigner; SeaweedFS enforces SigV4)
and through the delay proxy in the delayed setting, bodies to /dev/null. curl is a C
client that spends a few hundredths of a millisecond of CPU per GET, so on a machine
whose cores are shared by the client and the storage server what it measures is what the
storage can deliver: no archive can be streamed faster than its members can be read.

* wall time: from spawning curl to reaping it (so it includes curl's start, a few ms, and
  opening its N connections: one round trip, in parallel, all at once with
  `--parallel-immediate`; the service's connections are warm);
* curl's CPU: user + system from `os.wait4`'s resource usage of that very child;
* every transfer is checked: HTTP 200 and exactly the object's size (`%{urlnum}` ties a
  write-out line to its URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import curl
from bench.ceiling import FetchSummary
from bench.cpu import CpuMeter
from bench.dataset import Dataset, ObjectSpec
from bench.s3 import S3Endpoint

#: One line per finished transfer: its index in the config, status, body bytes, new connections.
WRITE_OUT = "%{urlnum} %{http_code} %{size_download} %{num_connects}\\n"

#: Presigned URLs stay valid this long: signed once per cell, used within minutes.
URL_EXPIRES_S = 3600

#: Parallel transfers tried per cell; the best is the limit.
DEFAULT_LEVELS = (16, 32, 64)


class StorageLimitError(Exception):
    """curl failed, or a transfer was not a complete 200 of its object."""


def presigned_urls(
    ep: S3Endpoint, objects: Iterable[ObjectSpec], expires_s: int = URL_EXPIRES_S
) -> list[str]:
    """Path-style SigV4 presigned GETs of `objects` at `ep` (direct, or the delay proxy's
    address: the signature covers the host the request is sent to)."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=ep.endpoint_url,
        aws_access_key_id=ep.access_key,
        aws_secret_access_key=ep.secret_key,
        region_name=ep.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    try:
        return [
            client.generate_presigned_url(
                "get_object", Params={"Bucket": ep.bucket, "Key": o.key}, ExpiresIn=expires_s
            )
            for o in objects
        ]
    finally:
        client.close()


def _quoted(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"cannot write {value!r} to a curl config")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(urls: Iterable[str], output: str = "/dev/null") -> str:
    """A curl config (`-K`): one `url` / `output` pair per transfer, in order."""
    lines = ["# one GET per object, bodies discarded (bench/storage_limit.py)"]
    for url in urls:
        lines += [f"url = {_quoted(url)}", f"output = {_quoted(output)}"]
    return "\n".join(lines) + "\n"


def write_config(path: Path, urls: Iterable[str], output: str = "/dev/null") -> Path:
    path.write_text(config_text(urls, output))
    return path


def command(config: Path, parallel: int, *, max_time_s: float = 120.0) -> list[str]:
    return [
        curl.curl_binary(),
        "-q",  # first: ignore any ~/.curlrc
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--globoff",  # a URL's [] and {} are not patterns
        "--parallel",
        "--parallel-immediate",  # open N connections at once instead of probing for multiplexing
        "--parallel-max",
        str(parallel),
        "--max-time",
        f"{max_time_s:g}",  # per transfer
        "--write-out",
        WRITE_OUT,
        "--config",
        str(config),
    ]


@dataclass(frozen=True, slots=True)
class Transfer:
    index: int  # 0-based position of its URL in the config
    status: int
    size: int
    connects: int  # new connections this transfer opened


def parse_transfers(text: str) -> list[Transfer]:
    out: list[Transfer] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            index, status, size, connects = (int(v) for v in line.split())
        except ValueError:
            raise StorageLimitError(f"unexpected curl write-out line {line!r}") from None
        out.append(Transfer(index, status, size, connects))
    return out


def check_transfers(transfers: Sequence[Transfer], sizes: Sequence[int]) -> None:
    """Exactly one complete 200 per object."""
    seen: set[int] = set()
    for t in transfers:
        if not 0 <= t.index < len(sizes):
            raise StorageLimitError(f"transfer #{t.index}: no such URL ({len(sizes)} in the config)")
        if t.index in seen:
            raise StorageLimitError(f"transfer #{t.index} reported twice")
        seen.add(t.index)
        if t.status != 200:
            raise StorageLimitError(f"transfer #{t.index}: HTTP {t.status}")
        if t.size != sizes[t.index]:
            raise StorageLimitError(f"transfer #{t.index}: {t.size} bytes, expected {sizes[t.index]}")
    if len(seen) != len(sizes):
        raise StorageLimitError(f"{len(sizes) - len(seen)} of {len(sizes)} transfers missing")


@dataclass(frozen=True, slots=True)
class CurlBatch:
    seconds: float  # spawn -> reaped
    cpu_s: float  # curl's user + system (wait4 rusage)
    system_s: float  # the system part
    transfers: list[Transfer]

    @property
    def connections(self) -> int:
        return sum(t.connects for t in self.transfers)


def run_batch(config: Path, parallel: int, sizes: Sequence[int], *, max_time_s: float = 120.0) -> CurlBatch:
    """Run one curl over `config` and wait for it (blocking: call it in a thread). The child
    is reaped with os.wait4, whose resource usage is that child's alone."""
    cmd = command(config, parallel, max_time_s=max_time_s)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        errors = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise StorageLimitError(f"curl --parallel exited {proc.returncode}: {errors[-500:]}")
    transfers = parse_transfers(text)
    check_transfers(transfers, sizes)
    return CurlBatch(seconds, usage.ru_utime + usage.ru_stime, usage.ru_stime, transfers)


class StorageLimit:
    """The presigned URLs of one cell in a curl config, run at several parallel levels, run
    by run (kept open so its runs can be interleaved with the zipedge streams).

    `server_pids` are the storage side's processes (SeaweedFS, the delay proxy) whose CPU
    is accounted per run, like the service's during a stream.
    """

    def __init__(
        self,
        ep: S3Endpoint,
        ds: Dataset,
        levels: Sequence[int] = DEFAULT_LEVELS,
        server_pids: Mapping[str, int | None] | None = None,
    ) -> None:
        self._ep = ep
        self._ds = ds
        self._sizes = [o.size for o in ds.objects]
        self._server_pids = dict(server_pids or {})
        self._stack = contextlib.ExitStack()
        self._config: Path | None = None
        self.summaries = {
            n: FetchSummary("storage-limit", n, ds.count, ds.total_bytes, client="curl") for n in levels
        }

    async def __aenter__(self) -> StorageLimit:
        tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="zipedge-limit-")))
        urls = await asyncio.to_thread(presigned_urls, self._ep, self._ds.objects)
        self._config = write_config(tmp / f"{self._ds.name}.curl", urls)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stack.close()

    def __iter__(self) -> Iterator[FetchSummary]:
        return iter(self.summaries.values())

    async def run(self, parallel: int) -> float:
        assert self._config is not None
        meter = CpuMeter(self._server_pids)
        meter.start()
        batch = await asyncio.to_thread(run_batch, self._config, parallel, self._sizes)
        server = meter.stop()
        summary = self.summaries[parallel]
        summary.runs_s.append(batch.seconds)
        summary.cpu_s.append(batch.cpu_s)
        summary.cpu_system_s.append(batch.system_s)
        summary.server_cpu_s.append(server)
        summary.connections.append(batch.connections)
        return batch.seconds
