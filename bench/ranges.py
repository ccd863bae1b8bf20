"""Ranges of the live stream: what one `Range` on `/v1/zip` costs before any cache exists,
with the object index cold and primed, and how fast `zipedge index` primes it.

Every service here streams from SeaweedFS on loopback with no cache (`ZIPEDGE_CACHE=`, so
every request is live) and no Redis: the embedded default, whose object index (SQLite)
and remembered layouts (a folder) live in `ZIPEDGE_DATA_DIR`, so a fresh data dir is a
cold index. Each service gets one warm-up request on the warm-up day first.

1. Index throughput: `zipedge index --from --to` over the dataset's days, each run in a
   fresh data dir, at its default concurrency (ZIPEDGE_FETCH_CONCURRENCY) and at 64,
   interleaved with the storage limit (bench/storage_limit.py: one `curl --parallel`
   process GETting the same objects). Each run leaves a primed data dir behind.
2. Timed, per repetition (so that each sees the same machine load): the 90 % range with a
   cold index, a full stream, the 90 % range with a primed index, all received by curl
   (TTFB, total). Cold: a fresh data dir and service per run; `HEAD` gives the size, then
   `Range: bytes=<90 %>-`. The archive of never-read photos has data descriptors and its
   central directory needs every CRC, so the service reads members outside the range whole
   (`zipedge_range_crc_reads_total` on /metrics). Primed: one service on a data dir
   `zipedge index` filled, for the full streams and the ranges. Then one full copy is kept
   and checked member by member, which gives the members' byte extents in that archive.
3. Objects read per range: the same requests through `bench/count_proxy.py` (in this
   process: these runs are not timed), which records every request the service sends to
   SeaweedFS. For the 90 % range and 1 MiB in the middle: with the index cold (a fresh
   service each), primed by `zipedge index`, and primed by one full stream (that stream
   is the cold archive, with descriptors, and the range is cut from it: the layout last
   served). Every kept range body must be exactly that slice of the full archive with
   the same ETag. Each GET is mapped onto the archive by its member's extent and its
   `Range` header: objects read that the window does not overlap, and bytes requested
   outside the window, must both be 0 with a primed index.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from bench import curl
from bench.ceiling import FetchSummary
from bench.count_proxy import CountingProxy, Request
from bench.cpu import CpuMeter
from bench.dataset import Content, Dataset
from bench.report import Check, _f, _short, _table, _targets
from bench.s3 import S3Endpoint
from bench.stack import ROOT, ZipedgeServer, zipedge_command, zipedge_env
from bench.storage_limit import StorageLimit
from bench.stream import BenchError, StreamRun, curl_stream_once, verify_archive

MiB = 1024 * 1024
TAIL_FRACTION = 0.9
MIDDLE_BYTES = MiB
INDEX_CONCURRENCY = 64
#: A request has settled when no stream is active and storage saw nothing for this long.
SETTLE_QUIET_S = 0.3
SETTLE_TIMEOUT_S = 20.0
#: How long a full stream may take to teach the index (its listing shows the new layout).
LEARN_TIMEOUT_S = 20.0
CRC_READS = "zipedge_range_crc_reads_total"

#: States of the object index, in table order.
COLD, PRIMED, STREAMED = "cold", "primed", "streamed"
STATE_MEANING = {
    COLD: "cold (fresh data dir, nothing read)",
    PRIMED: "primed by zipedge index",
    STREAMED: "primed by one full stream (the range is cut from the archive that stream served)",
}


# --- windows and extents ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Archive bytes `start` to `stop` (exclusive) of an archive of `size` bytes."""

    label: str
    start: int
    stop: int
    size: int

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def header(self) -> str:
        """The `Range` header asking for it (open-ended when it runs to the end)."""
        return f"bytes={self.start}-" if self.stop == self.size else f"bytes={self.start}-{self.stop - 1}"

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"

    def overlap(self, lo: int, hi: int) -> int:
        return max(0, min(hi, self.stop) - max(lo, self.start))

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "start": self.start, "stop": self.stop, "archive_size": self.size}


def tail_window(size: int, fraction: float = TAIL_FRACTION) -> Window:
    """From `fraction` of the archive to its end: `Range: bytes=<start>-`."""
    return Window(f"{fraction:.0%}-end", int(size * fraction), size, size)


def middle_window(size: int, length: int = MIDDLE_BYTES) -> Window:
    """`length` bytes centred on the archive's middle."""
    start = max(0, (size - length) // 2)
    return Window(f"{length // MiB} MiB middle", start, min(size, start + length), size)


WINDOWS: tuple[Callable[[int], Window], ...] = (tail_window, middle_window)


@dataclass(frozen=True, slots=True)
class Extent:
    """Where one member's data lies in an archive (bytes `data_start` to `data_stop`)."""

    name: str
    data_start: int
    data_stop: int
    descriptor: bool  # flag bit 3: a data descriptor follows the data


_LOCAL = struct.Struct("<IHHHHHIIIHH")
_SIG_LOCAL = 0x04034B50


def member_extents(path: Path) -> dict[str, Extent]:
    """Every member's data extent, by name: the central directory (Python's zipfile) for
    where each local header is, the local header itself for where the data starts."""
    out: dict[str, Extent] = {}
    with zipfile.ZipFile(path) as zf, path.open("rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset)
            fields = _LOCAL.unpack(fh.read(_LOCAL.size))
            if fields[0] != _SIG_LOCAL:
                raise BenchError(f"{info.filename}: no local header at {info.header_offset}")
            start = info.header_offset + _LOCAL.size + fields[9] + fields[10]
            out[info.filename] = Extent(
                info.filename, start, start + info.compress_size, bool(info.flag_bits & 0x08)
            )
    return out


def requested_span(range_header: str | None, size: int) -> tuple[int, int]:
    """The bytes (start, stop) of an object of `size` bytes that a GET asked for."""
    if range_header is None:
        return 0, size
    unit, _, spec = range_header.partition("=")
    first, sep, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not sep or "," in spec:
        raise BenchError(f"a GET with a Range the bench does not understand: {range_header!r}")
    if not first:
        return max(0, size - int(last)), size
    return min(int(first), size), min(int(last) + 1, size) if last else size


# --- what storage was asked for ----------------------------------------------------------


@dataclass(slots=True)
class Reads:
    """The requests the service sent to storage while answering one request."""

    gets: int = 0  # GETs of the archive's objects
    objects: int = 0  # distinct objects among them
    whole: int = 0  # ... without a Range header
    ranged: int = 0
    overlapping: int = 0  # members whose data the window overlaps (what a range needs)
    outside: list[str] = field(default_factory=list)  # objects read that the window does not overlap
    bytes_requested: int = 0
    bytes_outside: int = 0  # requested bytes outside the window
    lists: int = 0  # ListObjectsV2 (day listings)
    other: dict[str, int] = field(default_factory=dict)  # anything else, by method and path kind
    crc_reads: int | None = None  # zipedge_range_crc_reads_total during the request

    @property
    def clean(self) -> bool:
        """Nothing outside the window was read."""
        return not self.outside and self.bytes_outside == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "object_gets": self.gets,
            "objects": self.objects,
            "whole_gets": self.whole,
            "ranged_gets": self.ranged,
            "members_overlapping_window": self.overlapping,
            "objects_outside_window": len(self.outside),
            "outside_examples": self.outside[:5],
            "bytes_requested": self.bytes_requested,
            "bytes_outside_window": self.bytes_outside,
            "lists": self.lists,
            "other_requests": self.other,
            "crc_reads": self.crc_reads,
        }


def _window_extent(extents: Mapping[str, Extent], window: Window | None) -> Window:
    if window is not None:
        return window
    stop = max((e.data_stop for e in extents.values()), default=0)
    return Window("whole archive", 0, stop, stop)


def count_reads(
    requests: Iterable[Request],
    *,
    bucket: str,
    prefix: str,
    extents: Mapping[str, Extent],
    window: Window | None,
) -> Reads:
    """Map each request onto the archive: a GET of a member by its extent and its Range
    header. `window` None: the whole archive was asked for."""
    win = _window_extent(extents, window)
    reads = Reads(overlapping=sum(1 for e in extents.values() if win.overlap(e.data_start, e.data_stop)))
    root = f"/{bucket}/{prefix.strip('/')}/"
    seen: set[str] = set()
    other: Counter[str] = Counter()
    for req in requests:
        path, _, query = req.target.partition("?")
        path = unquote(path)
        if req.method == "GET" and "list-type=" in query:
            reads.lists += 1
            continue
        extent = extents.get(path[len(root) :]) if path.startswith(root) else None
        if req.method != "GET" or extent is None:
            other[f"{req.method} {'another object' if path.startswith(root) else path}"] += 1
            continue
        reads.gets += 1
        reads.ranged += req.range is not None
        reads.whole += req.range is None
        a, b = requested_span(req.range, extent.data_stop - extent.data_start)
        lo, hi = extent.data_start + a, extent.data_start + b
        reads.bytes_requested += hi - lo
        reads.bytes_outside += (hi - lo) - win.overlap(lo, hi)
        if extent.name not in seen:
            seen.add(extent.name)
            if not win.overlap(extent.data_start, extent.data_stop):
                reads.outside.append(extent.name)
    reads.objects = len(seen)
    reads.other = dict(other)
    return reads


def metric_value(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- zipedge index ------------------------------------------------------------------------

_DONE = re.compile(r"done: (\d+) CRCs learned, (\d+) already known, (\d+) failed, in ([\d.]+) s")
_RATE = re.compile(r"(\d+) learned \((\d+) objects/s, (\d+) MB/s\)")


@dataclass(slots=True)
class IndexRun:
    concurrency: int
    wall_s: float = 0.0  # spawn -> reaped: interpreter start, runtime open, listing, reads
    reported_s: float = 0.0  # its own "done ... in X s" (0.1 s resolution)
    objects_per_s: float = 0.0  # its own rate on the last progress line (learned / its seconds)
    learned: int = 0
    known: int = 0
    failed: int = 0
    bytes: int = 0
    cpu_s: float = 0.0  # the index process (wait4 rusage)
    seaweedfs_cpu_s: float | None = None

    @property
    def seconds(self) -> float:
        """Its own time from its first listing to the last day recorded (learned / its rate,
        finer than the done line's 0.1 s)."""
        return self.learned / self.objects_per_s if self.objects_per_s else self.reported_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "wall_s": self.wall_s,
            "reported_s": self.reported_s,
            "seconds": self.seconds,
            "objects_per_s": self.learned / self.seconds if self.seconds else None,
            "mb_per_s": self.mb_per_s,
            "wall_objects_per_s": self.learned / self.wall_s if self.wall_s else None,
            "learned": self.learned,
            "known": self.known,
            "failed": self.failed,
            "bytes": self.bytes,
            "cpu_s": self.cpu_s,
            "seaweedfs_cpu_s": self.seaweedfs_cpu_s,
        }


def parse_index_output(text: str, run: IndexRun) -> IndexRun:
    """Fill `run` from what `zipedge index` printed on stderr."""
    done = _DONE.search(text)
    if done is None:
        raise BenchError(f"zipedge index printed no done line: {text[-500:]!r}")
    run.learned, run.known, run.failed = (int(done[i]) for i in (1, 2, 3))
    run.reported_s = float(done[4])
    rates = _RATE.findall(text)
    if rates and int(rates[-1][0]) == run.learned:
        run.objects_per_s = float(rates[-1][1])
    return run


def _run_index(cmd: list[str], env: dict[str, str], log_path: Path) -> tuple[float, float, str, int]:
    """(wall s, CPU s, stderr, exit code) of one `zipedge index` (blocking: in a thread)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(cmd[1:])}\n{text}\n")
    return wall, usage.ru_utime + usage.ru_stime, text, proc.returncode


async def index_once(
    ep: S3Endpoint,
    ds: Dataset,
    env: Mapping[str, str],
    data_dir: Path,
    concurrency: int | None,
    default_concurrency: int,
    *,
    weed_pid: int | None,
    log_path: Path,
    rerun: bool = False,
) -> IndexRun:
    """One `zipedge index` over `ds`'s days in `data_dir`: fresh (every CRC learned) or, with
    `rerun`, already indexed (every CRC known: start-up and the day listings only)."""
    _make_dir(data_dir)
    cmd = [*zipedge_command(), "index", "--from", ds.first_day.isoformat(), "--to", ds.last_day.isoformat()]
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    proc_env = zipedge_env(ep, f"s3://{ep.bucket}/{ds.prefix}", {**env, **_embedded(data_dir)})
    meter = CpuMeter({"seaweedfs": weed_pid})
    meter.start()
    wall, cpu, text, code = await asyncio.to_thread(_run_index, cmd, proc_env, log_path)
    weed = meter.stop().get("seaweedfs")
    if code != 0:
        raise BenchError(f"zipedge index exited {code}: {text[-500:]}")
    run = parse_index_output(text, IndexRun(concurrency or default_concurrency, wall, cpu_s=cpu))
    run.seaweedfs_cpu_s = weed
    expected = (0, ds.count, 0) if rerun else (ds.count, 0, 0)
    if (run.learned, run.known, run.failed) != expected:
        raise BenchError(
            f"zipedge index in {'an indexed' if rerun else 'a fresh'} data dir learned {run.learned}, "
            f"knew {run.known}, failed {run.failed}; expected {expected[0]} learned, {expected[1]} known"
        )
    run.bytes = 0 if rerun else ds.total_bytes
    return run


# --- results ------------------------------------------------------------------------------


@dataclass(slots=True)
class RangeRun:
    """One ranged request as curl received it."""

    window: Window
    ttfb_s: float = 0.0
    total_s: float = 0.0
    received: int = 0
    etag: str = ""
    crc_reads: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.received / self.total_s / 1e6 if self.total_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.as_dict(),
            "ttfb_s": self.ttfb_s,
            "total_s": self.total_s,
            "received": self.received,
            "mb_per_s": self.mb_per_s,
            "etag": self.etag,
            "crc_reads": self.crc_reads,
            "cpu_s": self.cpu_s,
        }


@dataclass(slots=True)
class Counted:
    """One request sent through the counting proxy (untimed)."""

    state: str
    what: str  # a window label, or "full stream"
    reads: Reads
    window: Window | None = None
    etag: str = ""
    descriptors: bool = False  # the archive it was cut from has data descriptors
    body_checked: bool = False  # the body equals that slice of the checked full archive

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "what": self.what,
            "window": self.window.as_dict() if self.window else None,
            "etag": self.etag,
            "archive_has_descriptors": self.descriptors,
            "body_equals_full_archive_slice": self.body_checked,
            **self.reads.as_dict(),
        }


def _median(values: Iterable[float]) -> float | None:
    got = list(values)
    return statistics.median(got) if got else None


@dataclass(slots=True)
class RangesResult:
    describe: str
    objects: int
    object_bytes: int
    archives: dict[str, dict[str, Any]] = field(default_factory=dict)  # state -> size, etag
    ranges: dict[str, list[RangeRun]] = field(default_factory=dict)  # timed 90 % ranges by state
    full: list[StreamRun] = field(default_factory=list)  # timed full streams (primed archive)
    counted: list[Counted] = field(default_factory=list)
    index: dict[int, list[IndexRun]] = field(default_factory=dict)  # by concurrency
    default_concurrency: int = 0
    index_rerun: IndexRun | None = None  # on an indexed data dir: start-up and listing only
    limits: list[FetchSummary] = field(default_factory=list)
    members_checked: int = 0
    error: str | None = None

    @property
    def limit(self) -> FetchSummary | None:
        return max(self.limits, key=lambda s: s.mb_per_s) if self.limits and self.limits[0].runs_s else None

    def median_range(self, state: str, attr: str) -> float | None:
        return _median(getattr(r, attr) for r in self.ranges.get(state, []))

    def median_full(self, attr: str) -> float | None:
        return _median(getattr(r, attr) for r in self.full)

    def index_median(self, concurrency: int) -> IndexRun | None:
        runs = self.index.get(concurrency) or []
        return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2] if runs else None

    def index_ratio(self, concurrency: int) -> float | None:
        run, limit = self.index_median(concurrency), self.limit
        return run.mb_per_s / limit.mb_per_s if run and limit else None

    def reads(self, state: str, what: str) -> Reads | None:
        return next((c.reads for c in self.counted if c.state == state and c.what == what), None)

    def as_dict(self) -> dict[str, Any]:
        limit = self.limit
        return {
            "describe": self.describe,
            "objects": self.objects,
            "object_bytes": self.object_bytes,
            "redis": False,
            "archives": self.archives,
            "timed_ranges": {state: [r.as_dict() for r in runs] for state, runs in self.ranges.items()},
            "timed_ranges_median": {
                state: {
                    "ttfb_s": self.median_range(state, "ttfb_s"),
                    "total_s": self.median_range(state, "total_s"),
                    "crc_reads": self.median_range(state, "crc_reads"),
                }
                for state in self.ranges
            },
            "full_stream": [r.as_dict() for r in self.full],
            "full_stream_median": {
                "ttfb_s": self.median_full("ttfb_s"),
                "total_s": self.median_full("total_s"),
            },
            "members_checked": self.members_checked,
            "counted": [c.as_dict() for c in self.counted],
            "index_default_concurrency": self.default_concurrency,
            "index": {str(c): [r.as_dict() for r in runs] for c, runs in self.index.items()},
            "index_median": {
                str(c): (m.as_dict() if (m := self.index_median(c)) else None) for c in self.index
            },
            "index_ratio_to_storage_limit": {str(c): self.index_ratio(c) for c in self.index},
            "index_rerun_all_known": self.index_rerun.as_dict() if self.index_rerun else None,
            "storage_limit_by_parallel": [s.as_dict() for s in self.limits],
            "storage_limit_best": limit.as_dict() if limit else None,
            "error": self.error,
        }


# --- services and requests ----------------------------------------------------------------


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _embedded(data_dir: Path) -> dict[str, str]:
    """No cache, no Redis: the object index and remembered layouts in `data_dir`."""
    return {"ZIPEDGE_CACHE": "", "ZIPEDGE_REDIS_URL": "", "ZIPEDGE_DATA_DIR": str(data_dir)}


@contextlib.asynccontextmanager
async def _service(
    ep: S3Endpoint, ds: Dataset, env: Mapping[str, str], data_dir: Path, log_path: Path
) -> AsyncIterator[ZipedgeServer]:
    """`zipedge serve` on `data_dir`, after one warm-up request on the warm-up day."""
    _make_dir(data_dir)
    source = f"s3://{ep.bucket}/{ds.prefix}"
    async with ZipedgeServer(ep, source, log_path, {**env, **_embedded(data_dir)}) as server:
        warm = await curl.fetch(f"{server.base_url}/v1/zip?{ds.warmup_query}")
        if warm.status != 200 or warm.size != warm.content_length:
            raise BenchError(f"warm-up: HTTP {warm.status}, {warm.size} of {warm.content_length} bytes")
        yield server


def _zip_url(server: ZipedgeServer, ds: Dataset) -> str:
    return f"{server.base_url}/v1/zip?{ds.query}"


async def _head(server: ZipedgeServer, ds: Dataset) -> tuple[int, str]:
    """(size, ETag) of the archive a full GET would send now."""
    head = await curl.fetch(_zip_url(server, ds), method="HEAD")
    if head.status != 200 or head.content_length is None:
        raise BenchError(f"HEAD {_zip_url(server, ds)}: HTTP {head.status}")
    return head.content_length, head.etag


async def _metrics(server: ZipedgeServer) -> str:
    async with httpx.AsyncClient(timeout=10.0) as client:
        resp = await client.get(f"{server.base_url}/metrics")
        resp.raise_for_status()
        return resp.text


async def _settled(server: ZipedgeServer, proxy: CountingProxy | None = None) -> str:
    """/metrics once no stream is active (and, with a proxy, storage has been quiet)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        text = await _metrics(server)
        quiet = proxy is None or time.monotonic() - proxy.last_request_at >= SETTLE_QUIET_S
        if metric_value(text, "zipedge_streams_active") == 0 and quiet:
            return text
        if time.monotonic() > deadline:
            raise BenchError(f"the service did not settle within {SETTLE_TIMEOUT_S:g} s")
        await asyncio.sleep(0.05)


async def _range(
    server: ZipedgeServer,
    ds: Dataset,
    window: Window,
    out: Path | None = None,
    server_pids: Mapping[str, int | None] | None = None,
) -> RangeRun:
    """One `Range` request received by curl; a 206 of exactly the window, checked."""
    url = _zip_url(server, ds)
    before = metric_value(await _settled(server), CRC_READS)
    meter = CpuMeter({**(server_pids or {}), "service": server.pid})
    meter.start()
    got = await curl.fetch(url, out, headers={"Range": window.header})
    cpu = meter.stop()
    if got.status != 206 or got.content_range != window.content_range:
        raise BenchError(
            f"GET {url} Range {window.header}: HTTP {got.status}, Content-Range {got.content_range!r} "
            f"(expected 206 {window.content_range})"
        )
    if got.size != len(window) or got.content_length != len(window):
        raise BenchError(f"Range {window.header}: {got.size} bytes, Content-Length {got.content_length}")
    after = metric_value(await _settled(server), CRC_READS)
    return RangeRun(window, got.ttfb_s, got.total_s, got.size, got.etag, int(after - before), cpu)


def _same_slice(body: Path, full: Path, window: Window) -> None:
    with full.open("rb") as fh:
        fh.seek(window.start)
        expected = fh.read(len(window))
    if body.read_bytes() != expected:
        raise BenchError(f"the {window.label} range ({window.header}) differs from the full archive there")


# --- the phases ---------------------------------------------------------------------------


@dataclass
class _Run:
    """What every phase needs."""

    direct: S3Endpoint
    weed_pid: int | None
    ds: Dataset
    content: Content
    env: dict[str, str]
    reps: int
    logs: Path
    tmp: Path
    archives: Path
    log: Callable[[str], None]
    res: RangesResult
    primed_dirs: list[Path] = field(default_factory=list)
    services: int = 0

    def log_path(self, what: str) -> Path:
        self.services += 1
        return self.logs / f"zipedge-ranges-{self.services:02d}-{what}.log"

    def state_archive(self, state: str, size: int, etag: str) -> None:
        """Every run of a state must see the same archive."""
        seen = self.res.archives.setdefault(state, {"size": size, "etag": etag})
        if (seen["size"], seen["etag"]) != (size, etag):
            raise BenchError(f"{state}: archive {size} B {etag}, earlier {seen['size']} B {seen['etag']}")


async def _index_phase(run: _Run, limit_levels: Sequence[int]) -> None:
    res, ds = run.res, run.ds
    levels = (None, INDEX_CONCURRENCY)
    async with StorageLimit(run.direct, ds, limit_levels, {"seaweedfs": run.weed_pid}) as limit:
        for rep in range(1, run.reps + 1):
            curls = [f"N={n} {await limit.run(n):.2f} s" for n in limit_levels]
            notes = []
            for conc in levels:
                data_dir = run.tmp / f"index-{conc or 'default'}-{rep}"
                got = await index_once(
                    run.direct,
                    ds,
                    run.env,
                    data_dir,
                    conc,
                    res.default_concurrency,
                    weed_pid=run.weed_pid,
                    log_path=run.logs / "zipedge-index.log",
                )
                res.index.setdefault(got.concurrency, []).append(got)
                run.primed_dirs.append(data_dir)
                notes.append(f"c={got.concurrency} {got.seconds:.2f} s ({got.wall_s:.2f} s wall)")
            run.log(f"ranges: index #{rep}: storage limit {', '.join(curls)}; index {', '.join(notes)}")
    res.limits = list(limit)
    # Once more where everything is known: what a run costs besides reading objects.
    res.index_rerun = await index_once(
        run.direct,
        ds,
        run.env,
        run.primed_dirs[0],
        None,
        res.default_concurrency,
        weed_pid=run.weed_pid,
        log_path=run.logs / "zipedge-index.log",
        rerun=True,
    )
    run.log(f"ranges: index again where all is known: {res.index_rerun.wall_s:.2f} s wall")


async def _cold_range(run: _Run, rep: int) -> RangeRun:
    """The 90 % range from a service in a fresh data dir (nothing read yet)."""
    data_dir = run.tmp / f"cold-{rep}"
    async with _service(run.direct, run.ds, run.env, data_dir, run.log_path("cold")) as server:
        size, etag = await _head(server, run.ds)
        run.state_archive(COLD, size, etag)
        got = await _range(server, run.ds, tail_window(size), server_pids={"seaweedfs": run.weed_pid})
    await asyncio.to_thread(shutil.rmtree, data_dir, True)
    if got.etag != etag:
        raise BenchError(f"cold: the range was cut from {got.etag}, HEAD said {etag}")
    return got


async def _timed(run: _Run, full_copy: Path) -> dict[str, Extent]:
    """Per repetition, so that all three see the same machine load: the cold 90 % range
    (a fresh service), then a full stream and the 90 % range from a service on a data dir
    `zipedge index` filled. Then a full copy kept and checked; the members' extents in it."""
    pids = {"seaweedfs": run.weed_pid}
    res, ds = run.res, run.ds
    async with _service(run.direct, ds, run.env, run.primed_dirs[-1], run.log_path("primed")) as server:
        size, etag = await _head(server, ds)
        run.state_archive(PRIMED, size, etag)
        for rep in range(1, run.reps + 1):
            cold = await _cold_range(run, rep)
            full = await curl_stream_once(_zip_url(server, ds), server.pid, server_pids=pids)
            got = await _range(server, ds, tail_window(size), server_pids=pids)
            if (full.received, full.etag, got.etag) != (size, etag, etag):
                raise BenchError(f"primed: a full stream {full.received} B {full.etag}, range {got.etag}")
            res.ranges.setdefault(COLD, []).append(cold)
            res.full.append(full)
            res.ranges.setdefault(PRIMED, []).append(got)
            run.log(
                f"ranges #{rep}: cold range TTFB {cold.ttfb_s * 1e3:.1f} ms, {cold.total_s:.3f} s, "
                f"{cold.crc_reads} CRC reads; full stream TTFB {full.ttfb_s * 1e3:.1f} ms, "
                f"{full.total_s:.3f} s; primed range TTFB {got.ttfb_s * 1e3:.1f} ms, {got.total_s:.3f} s, "
                f"{got.crc_reads} CRC reads"
            )
        checked = await curl_stream_once(_zip_url(server, ds), server.pid, full_copy)
    if (checked.received, checked.etag) != (size, etag):
        raise BenchError(f"primed: the checked copy is {checked.received} B {checked.etag}")
    res.members_checked = await asyncio.to_thread(verify_archive, full_copy, ds.objects, run.content)
    return await asyncio.to_thread(member_extents, full_copy)


async def _counted(
    run: _Run,
    server: ZipedgeServer,
    proxy: CountingProxy,
    state: str,
    window: Window | None,
    full: Path,
    extents: Mapping[str, Extent],
) -> Counted:
    """One request through the counting proxy: a range (kept and compared with `full`) or,
    with `window` None, a full stream (kept into `full`)."""
    ds = run.ds
    text = await _settled(server, proxy)
    mark = len(proxy.requests)
    if window is None:
        got = await curl_stream_once(_zip_url(server, ds), server.pid, full)
        etag, what = got.etag, "full stream"
    else:
        body = run.archives / "range.bin"
        ranged = await _range(server, ds, window, body)
        etag, what = ranged.etag, window.label
    after = await _settled(server, proxy)
    if window is None:
        extents = await asyncio.to_thread(member_extents, full)
    reads = count_reads(
        proxy.requests[mark:], bucket=run.direct.bucket, prefix=ds.prefix, extents=extents, window=window
    )
    reads.crc_reads = int(metric_value(after, CRC_READS) - metric_value(text, CRC_READS))
    counted = Counted(state, what, reads, window, etag, any(e.descriptor for e in extents.values()))
    if window is not None:
        await asyncio.to_thread(_same_slice, body, full, window)
        body.unlink()
        counted.body_checked = True
    run.res.counted.append(counted)
    run.log(
        f"ranges: counted {state} {what}: {reads.gets} GETs of {reads.objects} objects "
        f"({reads.overlapping} overlap the window), {len(reads.outside)} outside, "
        f"{reads.bytes_outside} B outside, {reads.crc_reads} CRC reads, {reads.lists} LISTs"
    )
    return counted


async def _primed_counted(run: _Run, full: Path, extents: Mapping[str, Extent]) -> None:
    ds = run.ds
    async with CountingProxy(run.direct.host, run.direct.port) as proxy:
        ep = run.direct.via(proxy.url)
        async with _service(ep, ds, run.env, run.primed_dirs[-2], run.log_path("primed-counted")) as server:
            size, etag = await _head(server, ds)
            run.state_archive(PRIMED, size, etag)
            for make in WINDOWS:
                await _counted(run, server, proxy, PRIMED, make(size), full, extents)
            # The full stream too, as the reference row: every object read once.
            whole = await _counted(run, server, proxy, PRIMED, None, full, extents)
            if whole.etag != etag:
                raise BenchError(f"primed: a full stream sent {whole.etag}, HEAD said {etag}")


async def _streamed_and_cold_counted(run: _Run, full: Path) -> None:
    """A full stream in a fresh data dir (the cold archive, kept), the ranges after it;
    then each range in a fresh data dir of its own."""
    ds = run.ds
    async with CountingProxy(run.direct.host, run.direct.port) as proxy:
        ep = run.direct.via(proxy.url)
        data_dir = run.tmp / "streamed"
        async with _service(ep, ds, run.env, data_dir, run.log_path("streamed-counted")) as server:
            first = await _counted(run, server, proxy, COLD, None, full, {})
            size = await asyncio.to_thread(os.path.getsize, full)
            run.state_archive(COLD, size, first.etag)
            await asyncio.to_thread(verify_archive, full, ds.objects, run.content)
            extents = await asyncio.to_thread(member_extents, full)
            await _learned(server, ds, first.etag)
            # No HEAD here: it would remember the new layout as the one served.
            for make in WINDOWS:
                got = await _counted(run, server, proxy, STREAMED, make(size), full, extents)
                if got.etag != first.etag:
                    raise BenchError(f"streamed: the range was cut from {got.etag}, not {first.etag}")
        for i, make in enumerate(WINDOWS, start=1):
            cold_dir = run.tmp / f"cold-counted-{i}"
            async with _service(ep, ds, run.env, cold_dir, run.log_path("cold-counted")) as server:
                size, etag = await _head(server, ds)
                run.state_archive(COLD, size, etag)
                await _counted(run, server, proxy, COLD, make(size), full, extents)
        if proxy.unparsed:
            raise BenchError(f"the counting proxy could not follow a connection: {proxy.unparsed[0]}")


async def _learned(server: ZipedgeServer, ds: Dataset, served: str) -> None:
    """Wait until the day listings show what a stream taught the index: /v1/days (which
    does not remember a layout as served, unlike HEAD) names another archive."""
    deadline = time.monotonic() + LEARN_TIMEOUT_S
    async with httpx.AsyncClient(timeout=10.0) as client:
        while True:
            body = (await client.get(f"{server.base_url}/v1/days?{ds.query}")).json()
            if f'"{body["archive"]["id"]}"' != served:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"the index had not learned the streamed CRCs after {LEARN_TIMEOUT_S:g} s")
            await asyncio.sleep(0.1)


async def measure(
    direct: S3Endpoint,
    weed_pid: int | None,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    *,
    reps: int,
    limit_levels: Sequence[int],
    logs: Path,
    tmp: Path,
    archives: Path,
    log: Callable[[str], None],
) -> RangesResult:
    from service.constants import DEFAULT_FETCH_CONCURRENCY

    res = RangesResult(ds.describe(), ds.count, ds.total_bytes)
    res.default_concurrency = int(env.get("ZIPEDGE_FETCH_CONCURRENCY", DEFAULT_FETCH_CONCURRENCY))
    work = tmp / "ranges"
    run = _Run(direct, weed_pid, ds, content, env, reps, logs, work, archives, log, res)
    full = archives / "ranges-full.zip"
    try:
        log(f"ranges: zipedge index (c={res.default_concurrency}, {INDEX_CONCURRENCY}) and the storage limit")
        await _index_phase(run, limit_levels)
        log("ranges: timed, alternately: the range with a cold index, a full stream, the range primed")
        extents = await _timed(run, full)
        log("ranges: objects read per request, through the counting proxy")
        await _primed_counted(run, full, extents)
        full.unlink(missing_ok=True)
        await _streamed_and_cold_counted(run, full)
    except Exception as exc:  # recorded; the run goes on
        res.error = f"{type(exc).__name__}: {exc}"
        log(f"ranges FAILED:\n{traceback.format_exc()}")
    finally:
        full.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    return res


# --- the table ----------------------------------------------------------------------------


def checks(res: RangesResult) -> list[Check]:
    out: list[Check] = []
    for state in (PRIMED, STREAMED):
        counted = [c for c in res.counted if c.state == state and c.window is not None]
        if not counted:
            continue
        measured = "; ".join(
            f"{c.what}: {len(c.reads.outside)} objects, {c.reads.bytes_outside} B outside" for c in counted
        )
        out.append(
            Check(
                "no object outside the range is read with a primed index",
                STATE_MEANING[state].split(" (")[0],
                measured,
                "",
                all(c.reads.clean for c in counted),
            )
        )
    full_s = res.median_full("total_s")
    for state in (COLD, PRIMED):
        total, ttfb = res.median_range(state, "total_s"), res.median_range(state, "ttfb_s")
        if total is None or ttfb is None or not full_s:
            continue
        crc = res.median_range(state, "crc_reads")
        out.append(
            Check(
                f"90 % range, {state} index",
                "",
                f"TTFB {ttfb * 1e3:.1f} ms, total {total:.3f} s = {total / full_s:.2f} x the full stream's "
                f"{full_s:.3f} s; {crc:.0f} members read whole for their CRC",
                "",
                None,
            )
        )
    limit = res.limit
    for conc in sorted(res.index):
        run, ratio = res.index_median(conc), res.index_ratio(conc)
        if run is None or ratio is None or limit is None:
            continue
        out.append(
            Check(
                f"zipedge index, concurrency {conc}",
                "",
                f"{run.learned / run.seconds:,.0f} objects/s, {run.mb_per_s:.0f} MB/s = {ratio:.2f} x the "
                f"storage limit ({limit.mb_per_s:.0f} MB/s @{limit.concurrency})",
                "",
                None,
            )
        )
    return out


def _reads_cells(reads: Reads | None) -> list[str]:
    if reads is None:
        return ["-"] * 5
    return [
        f"{reads.gets:,} ({reads.whole:,} whole)",
        f"{reads.objects:,}/{reads.overlapping:,}",
        f"{len(reads.outside):,}",
        f"{reads.bytes_outside / 1e6:,.1f}",
        f"{reads.crc_reads if reads.crc_reads is not None else '-'}",
    ]


def _timed_cells(total: float | None, ttfb: float | None, nbytes: int | None) -> list[str]:
    mb_s = nbytes / total / 1e6 if nbytes and total else None
    return [_f(ttfb * 1e3 if ttfb is not None else None, ".1f"), _f(total, ".3f"), _f(mb_s, ".0f")]


def _rows(res: RangesResult) -> list[list[str]]:
    full_s = res.median_full("total_s")
    rows: list[list[str]] = []
    for state in (PRIMED, COLD):
        archive = res.archives.get(state, {}).get("size")
        reads = res.reads(state, "full stream")
        if state == COLD and reads is None:
            continue
        timed = state == PRIMED
        ttfb = res.median_full("ttfb_s") if timed else None
        rows.append(
            [
                "full stream",
                state,
                _f(archive / 1e6 if archive else None, ",.1f"),
                *_timed_cells(full_s if timed else None, ttfb, archive),
                *_reads_cells(reads),
                "1.00" if timed and full_s else "-",
            ]
        )
    tail = tail_window(1).label
    labels = list(dict.fromkeys(c.what for c in res.counted if c.window is not None)) or [tail]
    for label in labels:
        for state in (COLD, PRIMED, STREAMED):
            counted = next((c for c in res.counted if c.state == state and c.what == label), None)
            timed = res.ranges.get(state, []) if label == tail else []
            window = counted.window if counted else (timed[0].window if timed else None)
            if window is None:
                continue
            total = _median(r.total_s for r in timed)
            rows.append(
                [
                    f"range {label}",
                    state,
                    f"{len(window) / 1e6:,.1f}",
                    *_timed_cells(total, _median(r.ttfb_s for r in timed), len(window)),
                    *_reads_cells(counted.reads if counted else None),
                    _f(total / full_s if total and full_s else None, ".2f"),
                ]
            )
    return rows


def _index_rows(res: RangesResult) -> list[list[str]]:
    rows: list[list[str]] = []
    for s in res.limits:
        if not s.runs_s:
            continue
        best = "*" if s is res.limit else ""
        rows.append(
            [
                f"storage limit, curl --parallel-max {s.concurrency}{best}",
                f"{s.objects / s.median_s:,.0f}",
                f"{s.mb_per_s:.0f}",
                f"{s.median_s:.3f}",
                "-",
                _f(s.cpu_ms_per_object, ".3f"),
                _f(s.mb_per_s / res.limit.mb_per_s if res.limit else None, ".2f"),
            ]
        )
    for conc in sorted(res.index):
        run = res.index_median(conc)
        if run is None:
            continue
        default = " (default)" if conc == res.default_concurrency else ""
        rows.append(
            [
                f"zipedge index --concurrency {conc}{default}",
                f"{run.learned / run.seconds:,.0f}",
                f"{run.mb_per_s:.0f}",
                f"{run.seconds:.3f}",
                f"{run.wall_s:.3f}",
                _f(run.cpu_s / run.learned * 1e3 if run.learned else None, ".3f"),
                _f(res.index_ratio(conc), ".2f"),
            ]
        )
    again = res.index_rerun
    if again is not None:
        rows.append(
            [
                "zipedge index again, all known",
                "-",
                "-",
                f"{again.reported_s:.1f}" if again.reported_s else "<0.1",
                f"{again.wall_s:.3f}",
                "-",
                "-",
            ]
        )
    return rows


def render(res: RangesResult, all_checks: list[Check]) -> str:
    out = [
        f"Ranges of the live stream: {res.describe} (loopback, no cache, no Redis: the object index "
        "in each service's data dir)"
    ]
    header = [
        "request",
        "index",
        "MB",
        "TTFB ms",
        "total s",
        "MB/s",
        "object GETs",
        "objects/needed",
        "outside",
        "MB outside",
        "CRC reads",
        "x full",
    ]
    out.append(_table(header, _rows(res)))
    index_rows = _index_rows(res)
    if index_rows:
        out += [
            "",
            f"zipedge index over the same {res.objects:,} objects (a fresh data dir each run), against the "
            "storage limit (medians; * = the best level):",
            _table(["what", "objects/s", "MB/s", "s", "wall s", "CPU ms/obj", "x limit"], index_rows, left=1),
        ]
    if res.error:
        out += ["", f"  ERROR {_short(res.error)}"]
    out += _targets(all_checks)
    out += [
        "",
        "Timed: medians of the runs, received by curl (time_starttransfer, time_total); x full = total / "
        "the full stream's. Per repetition: the cold range (a fresh data dir and service, HEAD, the "
        "range), a full stream and the primed range (a service on a data dir zipedge index filled). index: "
        + "; ".join(f"{k} = {v}" for k, v in STATE_MEANING.items())
        + ".",
        "Counted (untimed, through a counting proxy between the service and SeaweedFS): object GETs "
        "(whole = no Range header); objects/needed = distinct objects read / members whose data the "
        "range overlaps; outside = objects read the range does not overlap; MB outside = bytes requested "
        "outside the range; CRC reads = zipedge_range_crc_reads_total. zipedge index: objects/s and s "
        "from its own report (first listing to the last day recorded), wall s = process start to exit, "
        "CPU = the whole process (start-up included); 'again, all known' = a rerun on an indexed data dir "
        "(start-up and the day listings, nothing read).",
    ]
    return "\n".join(out)
