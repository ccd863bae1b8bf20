"""One cold zipedge stream, measured from the outside: time, TTFB, server RSS, validity.

Two timing clients (`--client`):

* `curl` (default): one `curl -o /dev/null` per run; total time and TTFB are curl's own
  `time_total` and `time_starttransfer` (first response byte: the service sends its
  headers once the selection is resolved). Progress for the RSS marks is the bytes curl
  has read (`/proc/<pid>/io`), and its CPU is taken from the reaped child's rusage.
* `httpx`: the client runs in this process and reads raw body chunks as they arrive (no
  re-chunking, so the first chunk marks the first body byte), counts and CRCs them. On 2
  cores its CPU competes with the service's, which is why curl is the default.

Either way psutil samples the service's RSS every ~20 ms alongside, and the CPU seconds of
the service process (children excluded) and of the storage side (SeaweedFS, the delay
proxy) are taken right before the request and right after the last byte. One more, untimed
request of the same range is kept and checked by Python's zipfile against what was
uploaded: member names, sizes, CRC-32s (recomputed from the seeded content, not taken
from the service), then `testzip()` reads every member back. Each timed run must have
received exactly that checked archive: the same length and ETag (the archive id, a hash
of the manifest) with curl, the same length and CRC-32 with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

from bench import curl
from bench.cpu import CpuMeter
from bench.dataset import Content, Dataset, ObjectSpec

SAMPLE_INTERVAL_S = 0.02
RSS_MARKS = (0.25, 0.5, 0.75, 1.0)
MiB = 1024 * 1024

Client = Literal["curl", "httpx"]
CLIENTS: tuple[Client, ...] = ("curl", "httpx")


def archive_dir(need_bytes: int) -> tempfile.TemporaryDirectory[str]:
    """Where the checked copy of an archive goes: memory-backed when there is room (writing
    2 GB to this VM's disk while receiving it ran at a third of the speed of tmpfs)."""
    shm = Path("/dev/shm")
    if (
        shm.is_dir()
        and os.access(shm, os.W_OK)
        and shutil.disk_usage(shm).free > need_bytes * 1.2 + 256 * MiB
    ):
        return tempfile.TemporaryDirectory(prefix="zipedge-bench-", dir=shm)
    return tempfile.TemporaryDirectory(prefix="zipedge-bench-")


class BenchError(Exception):
    """The service answered something that is not a complete, valid archive."""


@dataclass(slots=True)
class StreamRun:
    client: Client = "curl"
    content_length: int = 0
    received: int = 0
    total_s: float = 0.0
    headers_s: float = 0.0
    # curl: request start -> first response byte (time_starttransfer);
    # httpx: request sent -> first body byte
    ttfb_s: float = 0.0
    rss_baseline: int = 0
    rss_peak: int = 0
    rss_at: dict[str, int] = field(default_factory=dict)  # "25%" -> RSS when 25 % had arrived
    # The service process's own CPU (children excluded) from right before the request to
    # right after the last byte; cpu_s has it too, beside the storage side's processes
    # ({"service", "seaweedfs", "proxy"}: those known).
    service_cpu_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_system_s: dict[str, float] = field(default_factory=dict)  # the kernel-mode part of cpu_s
    # The receiving client (curl, or this process with httpx): shows when the measuring
    # side is the bottleneck. With curl, bench_cpu_s is this process (the RSS sampler).
    client_cpu_s: float = 0.0
    bench_cpu_s: float = 0.0
    etag: str = ""
    # Of the whole archive: ties a timed httpx run to the verified copy (curl runs are
    # tied to it by length and ETag instead; only the checked copy is CRC'd).
    crc32: int | None = None
    samples: int = 0
    members: int = 0

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_baseline

    @property
    def mb_per_s(self) -> float:
        return self.received / self.total_s / 1e6

    def as_dict(self) -> dict[str, object]:
        return {
            "client": self.client,
            "content_length": self.content_length,
            "received": self.received,
            "total_s": self.total_s,
            "headers_s": self.headers_s,
            "ttfb_s": self.ttfb_s,
            "mb_per_s": self.mb_per_s,
            "rss_baseline": self.rss_baseline,
            "rss_peak": self.rss_peak,
            "rss_growth": self.rss_growth,
            "rss_at": self.rss_at,
            "service_cpu_s": self.service_cpu_s,
            "cpu_s": self.cpu_s,
            "cpu_system_s": self.cpu_system_s,
            "client_cpu_s": self.client_cpu_s,
            "bench_cpu_s": self.bench_cpu_s,
            "etag": self.etag,
            "crc32": None if self.crc32 is None else f"{self.crc32:08x}",
            "samples": self.samples,
            "members": self.members,
        }


@dataclass(slots=True)
class StreamSummary:
    runs: list[StreamRun]
    etag: str = ""  # of the checked copy (the archive id)
    checked_crc32: int | None = None  # of the checked copy

    @property
    def total_s(self) -> float:
        return statistics.median(r.total_s for r in self.runs)

    @property
    def archive_bytes(self) -> int:
        return self.runs[0].received

    @property
    def mb_per_s(self) -> float:
        return self.archive_bytes / self.total_s / 1e6

    @property
    def ttfb_s(self) -> float:
        return statistics.median(r.ttfb_s for r in self.runs)

    @property
    def first_ttfb_s(self) -> float:
        """The first timed run lists the day prefixes cold; later ones may hit the
        service's in-process day-listing cache."""
        return self.runs[0].ttfb_s

    # Memory is the worst run, not the median (a budget is a bound), measured from the RSS
    # before the first measured request: the allocator keeps freed memory, so later runs
    # start from a higher baseline and would understate the growth.
    @property
    def rss_baseline(self) -> int:
        return self.runs[0].rss_baseline

    @property
    def rss_peak(self) -> int:
        return max(r.rss_peak for r in self.runs)

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_baseline

    def as_dict(self) -> dict[str, object]:
        return {
            "etag": self.etag,
            "checked_crc32": None if self.checked_crc32 is None else f"{self.checked_crc32:08x}",
            "median_total_s": self.total_s,
            "archive_bytes": self.archive_bytes,
            "mb_per_s": self.mb_per_s,
            "median_ttfb_s": self.ttfb_s,
            "first_ttfb_s": self.first_ttfb_s,
            "rss_baseline": self.rss_baseline,
            "max_rss_peak": self.rss_peak,
            "max_rss_growth": self.rss_growth,
            "runs": [r.as_dict() for r in self.runs],
        }


class ProcessTree:
    """RSS and CPU of a process and its children at creation (a service, nginx's master
    and workers)."""

    def __init__(self, pid: int) -> None:
        root = psutil.Process(pid)
        self._procs = [root, *root.children(recursive=True)]

    def rss(self) -> int:
        total = 0
        for p in self._procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu_s(self) -> float:
        total = 0.0
        for p in self._procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total


async def _sample(
    tree: ProcessTree, received: Callable[[], int], out: list[tuple[int, int]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        out.append((received(), tree.rss()))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)
        except TimeoutError:
            pass


def _finish_samples(run: StreamRun, samples: list[tuple[int, int]]) -> None:
    run.samples = len(samples)
    run.rss_peak = max(rss for _, rss in samples)
    total = max(run.received, 1)
    for mark in RSS_MARKS:
        # The first sample taken once `mark` of the bytes had arrived.
        run.rss_at[f"{mark:.0%}"] = next(rss for got, rss in samples if got >= mark * total)


class _Progress:
    received = 0

    def __call__(self) -> int:
        return self.received


def _meter(pid: int, server_pids: Mapping[str, int | None] | None) -> CpuMeter:
    return CpuMeter({**(server_pids or {}), "service": pid})


def _record_cpu(run: StreamRun, meter: CpuMeter) -> None:
    run.cpu_s = meter.stop()
    run.cpu_system_s = meter.system
    run.service_cpu_s = run.cpu_s.get("service", 0.0)


async def stream_once(
    client: httpx.AsyncClient,
    url: str,
    pid: int,
    out_path: Path | None = None,
    server_pids: Mapping[str, int | None] | None = None,
) -> StreamRun:
    """GET `url` with httpx in this process and time it; the body is kept in `out_path`
    if given, else only CRC'd. `server_pids`: the storage side's processes, CPU-metered
    like the service (`pid`)."""
    tree = ProcessTree(pid)
    run = StreamRun(client="httpx", rss_baseline=tree.rss())
    meter = _meter(pid, server_pids)
    client_cpu0 = time.process_time()
    progress = _Progress()
    samples: list[tuple[int, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(tree, progress, samples, stop))
    try:
        meter.start()
        t0 = time.perf_counter()
        first: float | None = None
        async with client.stream("GET", url) as resp:
            run.headers_s = time.perf_counter() - t0
            if resp.status_code != 200:
                body = (await resp.aread())[:500]
                raise BenchError(f"GET {url}: HTTP {resp.status_code} (expected a 200 stream): {body!r}")
            if resp.headers.get("content-type", "").split(";")[0].strip() != "application/zip":
                raise BenchError(f"GET {url}: content-type {resp.headers.get('content-type')!r}")
            if "content-length" not in resp.headers:
                raise BenchError(f"GET {url}: no Content-Length")
            run.content_length = int(resp.headers["content-length"])
            run.etag = resp.headers.get("etag", "")
            crc = 0
            with out_path.open("wb") if out_path else contextlib.nullcontext() as fh:
                # aiter_raw() without a chunk size yields what each socket read returned.
                async for chunk in resp.aiter_raw():
                    if first is None:
                        first = time.perf_counter()
                    if fh is not None:
                        fh.write(chunk)
                    crc = zlib.crc32(chunk, crc)
                    progress.received += len(chunk)
            run.crc32 = crc
        t_end = time.perf_counter()
        _record_cpu(run, meter)
    except httpx.HTTPError as exc:
        raise BenchError(f"GET {url}: {exc!r} after {progress.received} bytes") from exc
    finally:
        samples.append((progress.received, tree.rss()))
        stop.set()
        await sampler
    run.client_cpu_s = run.bench_cpu_s = time.process_time() - client_cpu0
    run.received = progress.received
    run.total_s = t_end - t0
    run.ttfb_s = (first or t_end) - t0
    _finish_samples(run, samples)
    if run.received != run.content_length:
        raise BenchError(f"GET {url}: Content-Length {run.content_length}, received {run.received}")
    return run


class _CurlProgress:
    """Bytes curl has read so far (`rchar` in /proc/<pid>/io: the response, headers
    included, plus a few KB of startup reads; good enough to place the RSS marks)."""

    def __init__(self, pid: int) -> None:
        self.received = 0
        self._proc: psutil.Process | None = None
        try:
            self._proc = psutil.Process(pid)
        except psutil.NoSuchProcess:  # a short transfer: curl has exited and been reaped already
            pass

    def __call__(self) -> int:
        if self._proc is not None:
            try:
                self.received = int(self._proc.io_counters().read_chars)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._proc = None  # exited: keep the last value
        return self.received


def _children_cpu_s() -> float:
    # Reaped children only: the servers are children too, but they are still running.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def curl_stream_once(
    url: str,
    pid: int,
    out_path: Path | None = None,
    server_pids: Mapping[str, int | None] | None = None,
    headers: dict[str, str] | None = None,
) -> StreamRun:
    """GET `url` with curl and time it; the body goes to `out_path` if given, else /dev/null.
    `server_pids`: the storage side's processes, CPU-metered like the service (`pid`)."""
    tree = ProcessTree(pid)
    run = StreamRun(client="curl", rss_baseline=tree.rss())
    meter = _meter(pid, server_pids)
    bench_cpu0 = time.process_time()
    children0 = _children_cpu_s()
    samples: list[tuple[int, int]] = []
    stop = asyncio.Event()
    meter.start()
    proc = await curl.spawn(curl.command(url, out_path, headers=headers))
    progress = _CurlProgress(proc.pid)
    sampler = asyncio.create_task(_sample(tree, progress, samples, stop))
    try:
        result = await curl.finish(proc, url)  # curl has exited: the last byte is in
        _record_cpu(run, meter)
    except curl.CurlError as exc:
        raise BenchError(str(exc)) from exc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stop.set()
        await sampler
    samples.append((result.size, tree.rss()))
    run.bench_cpu_s = time.process_time() - bench_cpu0
    run.client_cpu_s = _children_cpu_s() - children0
    if result.status != 200:
        raise BenchError(
            f"GET {url}: HTTP {result.status} (expected a 200 stream): {await _error_body(url)!r}"
        )
    if result.content_type.split(";")[0].strip() != "application/zip":
        raise BenchError(f"GET {url}: content-type {result.content_type!r}")
    if result.content_length is None:
        raise BenchError(f"GET {url}: no Content-Length")
    run.content_length = result.content_length
    run.etag = result.etag
    run.received = result.size
    run.total_s = result.total_s
    run.ttfb_s = run.headers_s = result.ttfb_s
    _finish_samples(run, samples)
    if run.received != run.content_length:
        raise BenchError(f"GET {url}: Content-Length {run.content_length}, received {run.received}")
    return run


async def _error_body(url: str) -> bytes:
    """The body of a non-200 answer, for the error message (a 202 job says which limit)."""
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            resp = await client.get(url)
            return resp.content[:500] if resp.status_code != 200 else b"(200 on a second try)"
    except httpx.HTTPError as exc:
        return repr(exc).encode()


def file_crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while block := fh.read(4 * MiB):
            crc = zlib.crc32(block, crc)
    return crc


def verify_archive(path: Path, objects: tuple[ObjectSpec, ...], content: Content) -> int:
    """Check the archive against the uploaded objects; the member count."""
    expected = {o.name: o for o in objects}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            seen: set[str] = set()
            for info in infos:
                obj = expected.get(info.filename)
                if obj is None:
                    raise BenchError(
                        f"unexpected member {info.filename!r} (e.g. expected {next(iter(expected))!r})"
                    )
                if info.filename in seen:
                    raise BenchError(f"duplicate member {info.filename!r}")
                seen.add(info.filename)
                if info.compress_type != zipfile.ZIP_STORED:
                    raise BenchError(f"{info.filename}: compression {info.compress_type}, expected stored")
                if info.file_size != obj.size:
                    raise BenchError(f"{info.filename}: size {info.file_size}, uploaded {obj.size}")
                if info.CRC != content.crc32(obj):
                    raise BenchError(
                        f"{info.filename}: CRC {info.CRC:08x} differs from the uploaded object's"
                    )
            if len(seen) != len(expected):
                missing = sorted(set(expected) - seen)
                raise BenchError(f"{len(missing)} objects missing from the archive, e.g. {missing[:3]}")
            bad = zf.testzip()  # reads every member: data CRC == recorded CRC
            if bad is not None:
                raise BenchError(f"member {bad!r} fails its CRC check")
            return len(infos)
    except zipfile.BadZipFile as exc:
        raise BenchError(f"not a valid ZIP: {exc}") from exc


class StreamSession:
    """A client on one running service, warmed up, that times streams of `ds`.

    Timed runs only count the body (curl: into /dev/null; httpx: count and CRC): writing
    GBs on the measuring side, even to tmpfs, cost this 2-core VM a third of its
    throughput. `check()` makes one more, untimed request, keeps it and checks it member
    by member; every timed run must have received the very same archive (the same
    selection of the same objects gives the same bytes, once the object index has learned
    their CRCs, which an untimed first stream of the selection teaches it).
    """

    def __init__(
        self,
        base_url: str,
        pid: int,
        ds: Dataset,
        content: Content,
        tmp_dir: Path,
        client: Client = "curl",
        server_pids: Mapping[str, int | None] | None = None,
    ) -> None:
        self._pid = pid
        self._server_pids = dict(server_pids or {})
        self._ds = ds
        self._content = content
        self._out = tmp_dir / f"{ds.name}.zip"
        self._url = f"{base_url}/v1/zip?{ds.query}"
        self._warmup_url = f"{base_url}/v1/zip?{ds.warmup_query}"
        self.client = client
        self._http = (
            httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0)) if client == "httpx" else None
        )
        self.runs: list[StreamRun] = []

    async def _once(self, url: str, out_path: Path | None) -> StreamRun:
        if self._http is not None:
            return await stream_once(self._http, url, self._pid, out_path, self._server_pids)
        return await curl_stream_once(url, self._pid, out_path, self._server_pids)

    async def __aenter__(self) -> StreamSession:
        try:
            # One-time costs (imports, S3 client creation, connection pool) stay out of the figures.
            await self._once(self._warmup_url, self._out)
            await asyncio.to_thread(verify_archive, self._out, self._ds.warmup, self._content)
            # The first stream of a selection teaches the object index its members' CRCs,
            # and the next archive of it carries them in the local headers (no data
            # descriptors): a different archive, of the same objects. Stream it once,
            # untimed, so every timed run and the checked copy are the steady-state
            # archive, as every download after a day's first is.
            await self._once(self._url, None)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._out.unlink(missing_ok=True)

    async def run(self) -> StreamRun:
        run = await self._once(self._url, None)
        self.runs.append(run)
        return run

    async def run_checked(self) -> StreamRun:
        """One stream kept and checked member by member (`members` set); not in `runs`."""
        checked = await self._once(self._url, self._out)
        try:
            checked.members = await asyncio.to_thread(
                verify_archive, self._out, self._ds.objects, self._content
            )
            if checked.crc32 is None:
                checked.crc32 = await asyncio.to_thread(file_crc32, self._out)
        finally:
            self._out.unlink(missing_ok=True)
        return checked

    async def check(self) -> StreamSummary:
        checked = await self.run_checked()
        members = checked.members
        for run in self.runs:
            # httpx runs carry their own CRC; curl runs are tied by length and ETag only.
            same_crc = run.crc32 is None or run.crc32 == checked.crc32
            if (run.received, run.etag) != (checked.received, checked.etag) or not same_crc:
                raise BenchError(
                    f"GET {self._url}: a timed run received {run.received} B, ETag {run.etag}, "
                    f"CRC {run.crc32}; the checked copy {checked.received} B, ETag {checked.etag}, "
                    f"CRC {checked.crc32:08x}: the archive changed between requests"
                )
            run.members = members
        return StreamSummary(self.runs, etag=checked.etag, checked_crc32=checked.crc32)
