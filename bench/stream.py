"""One cold zipedge stream, measured from the outside: time, TTFB, server RSS, validity.

The client reads raw body chunks as they arrive (no re-chunking, so the first chunk marks
the first body byte), counts and CRCs them; psutil samples the service's RSS every ~20 ms
alongside. One more, untimed request of the same range is kept and checked by Python's
zipfile against what was uploaded: member names, sizes, CRC-32s (recomputed from the
seeded content, not taken from the service), then `testzip()` reads every member back.
Each timed run must have received exactly the bytes of that checked copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

from bench.dataset import Content, Dataset, ObjectSpec

SAMPLE_INTERVAL_S = 0.02
RSS_MARKS = (0.25, 0.5, 0.75, 1.0)
MiB = 1024 * 1024


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
    content_length: int = 0
    received: int = 0
    total_s: float = 0.0
    headers_s: float = 0.0
    ttfb_s: float = 0.0  # request sent -> first body byte
    rss_baseline: int = 0
    rss_peak: int = 0
    rss_at: dict[str, int] = field(default_factory=dict)  # "25%" -> RSS when 25 % had arrived
    service_cpu_s: float = 0.0
    client_cpu_s: float = 0.0  # this process: shows when the measuring side is the bottleneck
    crc32: int = 0  # of the whole archive: ties a timed run to the verified copy
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
            "client_cpu_s": self.client_cpu_s,
            "crc32": f"{self.crc32:08x}",
            "samples": self.samples,
            "members": self.members,
        }


@dataclass(slots=True)
class StreamSummary:
    runs: list[StreamRun]

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
            "median_total_s": self.total_s,
            "archive_bytes": self.archive_bytes,
            "mb_per_s": self.mb_per_s,
            "median_ttfb_s": self.ttfb_s,
            "rss_baseline": self.rss_baseline,
            "max_rss_peak": self.rss_peak,
            "max_rss_growth": self.rss_growth,
            "runs": [r.as_dict() for r in self.runs],
        }


class _ProcessTree:
    """RSS and CPU of the service, children included (in case it runs workers)."""

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


class _Progress:
    received = 0


async def _sample(
    tree: _ProcessTree, progress: _Progress, out: list[tuple[int, int]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        out.append((progress.received, tree.rss()))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)
        except TimeoutError:
            pass


async def stream_once(
    client: httpx.AsyncClient, url: str, pid: int, out_path: Path | None = None
) -> StreamRun:
    """GET `url` and time it; the body is kept in `out_path` if given, else only CRC'd."""
    tree = _ProcessTree(pid)
    run = StreamRun(rss_baseline=tree.rss())
    cpu0 = tree.cpu_s()
    client_cpu0 = time.process_time()
    progress = _Progress()
    samples: list[tuple[int, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(tree, progress, samples, stop))
    try:
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
    except httpx.HTTPError as exc:
        raise BenchError(f"GET {url}: {exc!r} after {progress.received} bytes") from exc
    finally:
        samples.append((progress.received, tree.rss()))
        stop.set()
        await sampler
    run.service_cpu_s = tree.cpu_s() - cpu0
    run.client_cpu_s = time.process_time() - client_cpu0
    run.received = progress.received
    run.total_s = t_end - t0
    run.ttfb_s = (first or t_end) - t0
    run.samples = len(samples)
    run.rss_peak = max(rss for _, rss in samples)
    total = max(run.received, 1)
    for mark in RSS_MARKS:
        # The first sample taken once `mark` of the bytes had arrived.
        run.rss_at[f"{mark:.0%}"] = next(rss for got, rss in samples if got >= mark * total)
    if run.received != run.content_length:
        raise BenchError(f"GET {url}: Content-Length {run.content_length}, received {run.received}")
    return run


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
    """An HTTP client on one running service, warmed up, that times streams of `ds`.

    Timed runs only count and CRC the body: writing GBs on the measuring side, even to
    tmpfs, cost this 2-core VM a third of its throughput. `check()` makes one more, untimed
    request, keeps it and checks it member by member; every timed run must have received
    the very same bytes (DESIGN §3: same selection, same objects, same bytes).
    """

    def __init__(self, base_url: str, pid: int, ds: Dataset, content: Content, tmp_dir: Path) -> None:
        self._pid = pid
        self._ds = ds
        self._content = content
        self._out = tmp_dir / f"{ds.name}.zip"
        self._url = f"{base_url}/v1/zip?{ds.query}"
        self._warmup_url = f"{base_url}/v1/zip?{ds.warmup_query}"
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=5.0))
        self.runs: list[StreamRun] = []

    async def __aenter__(self) -> StreamSession:
        try:
            # One-time costs (imports, S3 client creation, connection pool) stay out of the figures.
            await stream_once(self._client, self._warmup_url, self._pid, self._out)
            await asyncio.to_thread(verify_archive, self._out, self._ds.warmup, self._content)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()
        self._out.unlink(missing_ok=True)

    async def run(self) -> StreamRun:
        run = await stream_once(self._client, self._url, self._pid)
        self.runs.append(run)
        return run

    async def check(self) -> StreamSummary:
        checked = await stream_once(self._client, self._url, self._pid, self._out)
        try:
            members = await asyncio.to_thread(verify_archive, self._out, self._ds.objects, self._content)
        finally:
            self._out.unlink(missing_ok=True)
        for run in self.runs:
            if (run.received, run.crc32) != (checked.received, checked.crc32):
                raise BenchError(
                    f"GET {self._url}: a timed run received {run.received} B, CRC {run.crc32:08x}; the "
                    f"checked copy {checked.received} B, CRC {checked.crc32:08x}: the archive changed "
                    "between requests"
                )
            run.members = members
        return StreamSummary(self.runs)
