"""Load: 100 concurrent cold streams through the reverse proxy, with one and two service
processes, against the storage limit of the same GETs.

Per service configuration (`--load-workers`, default 1 and 2 processes): a fresh Redis,
`zipedge serve --workers N` without a cache (every stream is cold) with
`ZIPEDGE_MAX_STREAMS_PER_CLIENT` raised, and the repository's nginx (nginx/) in front of
it with its per-address limits raised (`LIMIT_CONN`, `LIMIT_RATE`, `LIMIT_BURST`): every
stream comes from 127.0.0.1, and the defaults (16 open requests, 4 live streams per
client) would refuse all but a few. Two batches each:

* different: `--load-streams` (100) streams of 100 different ranges of the `load`
  dataset (5 consecutive days of 10 x 200 KiB each, the first day moving one a stream);
* same: as many streams of one range (its first 5 days).

Each batch is one `curl --parallel --parallel-immediate --parallel-max <streams>`
process: every stream starts at once, on its own connection, and curl reports each one
(`%{urlnum}`): status, exit code, TTFB (`time_starttransfer`), bytes and Content-Length.
A stream counts as an error unless it is a 200 whose every promised byte arrived; every
tenth stream is kept and checked member by member like any stream's copy. Before the
batches one HEAD per range lists its days (so both configurations start from the same
warm listings), and a few warm-up streams reach every process.

Reported: aggregate MB/s (archive bytes / wall time of the curl process), against the
storage limit of exactly the same GETs (one `curl --parallel` process, presigned, at
`--load-limit-parallel` in flight, run right before the batch), p50/p99 TTFB, errors,
RSS of the service (every process) before and at its peak, and the growth per stream;
the CPU seconds of the service, nginx and SeaweedFS meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench import curl
from bench.cpu import CpuMeter
from bench.dataset import Content, Dataset, ObjectSpec
from bench.s3 import S3Endpoint
from bench.stack import ROOT, ZipedgeServer
from bench.storage_limit import StorageLimit
from bench.stream import BenchError, ProcessTree, verify_archive

#: Days in one stream's range, and how often a stream's archive is kept and checked.
RANGE_DAYS = 5
CHECK_EVERY = 10
#: What nginx and the service allow one client address during the load (see the module
#: docstring): far above the streams of a batch, so nothing is refused.
PROXY_LIMITS = {"limit_conn": "10000", "limit_rate": "100000r/s", "limit_burst": "100000"}
SERVICE_LIMITS = {"ZIPEDGE_MAX_STREAMS_PER_CLIENT": "10000"}
SAMPLE_INTERVAL_S = 0.05
BATCH_TIMEOUT_S = 600
MiB = 1024 * 1024

#: One line per finished transfer (content-length last: empty when there is none).
WRITE_OUT = (
    "%{urlnum} %{exitcode} %{http_code} %{time_starttransfer} %{time_total} %{size_download} "
    "%header{content-length}\\n"
)


@dataclass(frozen=True, slots=True)
class Transfer:
    index: int
    exit_code: int
    status: int
    ttfb_s: float
    total_s: float
    size: int
    content_length: int | None

    @property
    def complete(self) -> bool:
        return self.exit_code == 0 and self.status == 200 and self.size == self.content_length


@dataclass(slots=True)
class Batch:
    mode: str  # "different" or "same"
    workers: int
    streams: int
    seconds: float = 0.0
    bytes_total: int = 0
    transfers: list[Transfer] = field(default_factory=list)
    checked: int = 0  # archives kept and checked member by member
    errors: list[str] = field(default_factory=list)
    rss_baseline: int = 0
    rss_peak: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    limit_s: float | None = None  # the storage limit of the same GETs
    limit_bytes: int = 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_total / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def limit_mb_per_s(self) -> float | None:
        return self.limit_bytes / self.limit_s / 1e6 if self.limit_s else None

    @property
    def ratio(self) -> float | None:
        limit = self.limit_mb_per_s
        return self.mb_per_s / limit if limit else None

    def ttfb(self, q: float) -> float | None:
        values = sorted(t.ttfb_s for t in self.transfers if t.status == 200)
        if not values:
            return None
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    @property
    def rss_per_stream(self) -> float:
        return (self.rss_peak - self.rss_baseline) / self.streams if self.streams else 0.0

    def describe(self) -> str:
        p50, p99 = (self.ttfb(q) or 0.0 for q in (0.5, 0.99))
        return (
            f"{self.mode}, {self.workers} process(es): {self.mb_per_s:.0f} MB/s "
            f"(x{self.ratio or 0:.2f} the storage limit, {self.limit_mb_per_s or 0:.0f} MB/s), "
            f"TTFB p50 {p50 * 1e3:.0f} / p99 {p99 * 1e3:.0f} ms, {len(self.errors)} errors, "
            f"RSS +{self.rss_per_stream / MiB:.2f} MiB per stream, CPU {self.cpu_s}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "workers": self.workers,
            "streams": self.streams,
            "seconds": self.seconds,
            "bytes_total": self.bytes_total,
            "mb_per_s": self.mb_per_s,
            "storage_limit_s": self.limit_s,
            "storage_limit_mb_per_s": self.limit_mb_per_s,
            "ratio_to_storage_limit": self.ratio,
            "ttfb_p50_s": self.ttfb(0.5),
            "ttfb_p99_s": self.ttfb(0.99),
            "errors": self.errors,
            "checked_archives": self.checked,
            "rss_baseline": self.rss_baseline,
            "rss_peak": self.rss_peak,
            "rss_growth_per_stream": self.rss_per_stream,
            "cpu_s": self.cpu_s,
            "transfers": [
                [t.index, t.exit_code, t.status, t.ttfb_s, t.total_s, t.size, t.content_length]
                for t in self.transfers
            ],
        }


@dataclass(slots=True)
class LoadResult:
    describe: str
    batches: list[Batch] = field(default_factory=list)
    error: str | None = None

    @property
    def errors(self) -> list[str]:
        found = [f"{b.mode}, {b.workers} process(es): {e}" for b in self.batches for e in b.errors]
        return found + ([self.error] if self.error else [])

    def as_dict(self) -> dict[str, Any]:
        return {
            "describe": self.describe,
            "batches": [b.as_dict() for b in self.batches],
            "error": self.error,
        }


def ranges(ds: Dataset, streams: int, mode: str) -> list[tuple[str, str]]:
    """(from, to) of each stream: RANGE_DAYS days, starting one day later each ("different")
    or all the first RANGE_DAYS ("same")."""
    out = []
    starts = (ds.last_day - ds.first_day).days + 2 - RANGE_DAYS  # first days a range may have
    for i in range(streams):
        first = ds.first_day + timedelta(days=i % starts if mode == "different" else 0)
        out.append((first.isoformat(), (first + timedelta(days=RANGE_DAYS - 1)).isoformat()))
    return out


def objects_of(ds: Dataset, first: str, last: str) -> tuple[ObjectSpec, ...]:
    """The dataset's objects of the days `first`..`last` (names start with YYYY/MM/DD)."""
    lo, hi = first.replace("-", "/"), last.replace("-", "/")
    return tuple(o for o in ds.objects if lo <= o.name[:10] <= hi)


def front_nginx(data_dir: Path, upstream_port: int) -> Any:
    """The repository's reverse proxy in front of the service, its per-address limits raised."""
    from service.stack.nginx import Nginx

    return Nginx(
        "nginx",
        ROOT / "nginx" / "nginx.conf.template",
        data_dir,
        upstream=f"127.0.0.1:{upstream_port}",
        limit_conn=PROXY_LIMITS["limit_conn"],
        limit_rate=PROXY_LIMITS["limit_rate"],
        limit_burst=PROXY_LIMITS["limit_burst"],
    )


def parse_transfers(text: str) -> list[Transfer]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6:
            continue
        length = int(parts[6]) if len(parts) > 6 and parts[6].isdigit() else None
        out.append(
            Transfer(
                int(parts[0]),
                int(parts[1]),
                int(parts[2]),
                float(parts[3]),
                float(parts[4]),
                int(parts[5]),
                length,
            )
        )
    return out


def _run_curl(config: Path, parallel: int) -> tuple[float, str, str]:
    cmd = [
        curl.curl_binary(), "-q", "--silent", "--show-error", "--noproxy", "*", "--globoff",
        "--parallel", "--parallel-immediate", "--parallel-max", str(parallel),
        "--max-time", str(BATCH_TIMEOUT_S), "--write-out", WRITE_OUT, "--config", str(config),
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return (
        time.perf_counter() - t0,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


async def _sample_rss(tree: ProcessTree, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], tree.rss())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)


async def run_batch(
    batch: Batch,
    base_url: str,
    ds: Dataset,
    content: Content,
    pids: dict[str, int | None],
    service: ProcessTree,
    out_dir: Path,
    trees_of: dict[str, int],
) -> None:
    """The streams of `batch`, at once, through `base_url` (nginx). CPU is metered for
    `service` and the process trees of `trees_of` (nginx), and for the single processes
    of `pids` (SeaweedFS)."""
    spans = ranges(ds, batch.streams, batch.mode)
    kept = {i: out_dir / f"load-{batch.mode}-{i}.zip" for i in range(0, batch.streams, CHECK_EVERY)}
    lines = ["# the load's streams (bench/load.py)"]
    for i, (first, last) in enumerate(spans):
        lines += [
            f'url = "{base_url}/v1/zip?from={first}&to={last}"',
            f'output = "{kept.get(i, "/dev/null")}"',
        ]
    with tempfile.TemporaryDirectory(prefix="zipedge-load-") as tmp:
        config = Path(tmp) / "streams.curl"
        config.write_text("\n".join(lines) + "\n")
        batch.rss_baseline = service.rss()
        peak = [batch.rss_baseline]
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(service, stop, peak))
        # Every process of the service and of nginx (its master and worker); SeaweedFS's.
        trees = {"service": service, **{name: ProcessTree(pid) for name, pid in trees_of.items()}}
        meter = CpuMeter(pids)
        meter.start()
        cpu0 = {name: tree.cpu_s() for name, tree in trees.items()}
        try:
            batch.seconds, text, errors = await asyncio.to_thread(_run_curl, config, batch.streams)
        finally:
            stop.set()
            await sampler
        batch.cpu_s = {name: round(tree.cpu_s() - cpu0[name], 2) for name, tree in trees.items()}
        batch.cpu_s.update(meter.stop())
        batch.rss_peak = peak[0]
    batch.transfers = sorted(parse_transfers(text), key=lambda t: t.index)
    if len(batch.transfers) != batch.streams:
        batch.errors.append(
            f"curl reported {len(batch.transfers)} of {batch.streams} streams: {errors[-300:]}"
        )
    for t in batch.transfers:
        if not t.complete:
            batch.errors.append(
                f"stream #{t.index}: exit {t.exit_code}, HTTP {t.status}, {t.size} of {t.content_length} B"
            )
    batch.bytes_total = sum(t.size for t in batch.transfers)
    by_index = {t.index: t for t in batch.transfers}
    for i, path in kept.items():
        try:
            if path.exists() and i in by_index and by_index[i].complete:
                await asyncio.to_thread(verify_archive, path, objects_of(ds, *spans[i]), content)
                batch.checked += 1
        except BenchError as exc:
            batch.errors.append(f"stream #{i}: {exc}")
        finally:
            path.unlink(missing_ok=True)


async def _storage_limit(
    ep: S3Endpoint, ds: Dataset, batch: Batch, parallel: int, pids: dict[str, int | None]
) -> None:
    """The GETs of every stream of the batch (objects repeat for "same") by one curl."""
    objects = tuple(o for span in ranges(ds, batch.streams, batch.mode) for o in objects_of(ds, *span))
    gets = replace(ds, name=f"{ds.name}-{batch.mode}", objects=objects)
    async with StorageLimit(ep, gets, (parallel,), pids) as limit:
        batch.limit_s = await limit.run(parallel)
    batch.limit_bytes = gets.total_bytes


async def _prepare(base_url: str, ds: Dataset, streams: int) -> None:
    """One HEAD per range (its days listed, like every later stream's), then a few warm-up
    streams at once so every service process has imported and connected."""
    spans = sorted(set(ranges(ds, streams, "different")) | set(ranges(ds, streams, "same")))
    for first, last in spans:
        head = await curl.fetch(f"{base_url}/v1/zip?from={first}&to={last}", method="HEAD", max_time_s=60)
        if head.status != 200:
            raise BenchError(f"HEAD {first}..{last}: HTTP {head.status} (expected a 200 stream)")
    warm = f"{base_url}/v1/zip?{ds.warmup_query}"
    probes = await asyncio.gather(*(curl.fetch(warm, max_time_s=60) for _ in range(8)))
    if any(p.status != 200 for p in probes):
        raise BenchError(f"warm-up streams: {[p.status for p in probes]}")


async def _configuration(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    streams: int,
    workers: int,
    limit_parallel: int,
    weed: dict[str, int | None],
    dirs: tuple[Path, Path, Path],
) -> list[Batch]:
    """Both batches on one service of `workers` processes behind nginx, on a fresh Redis."""
    from service.stack.redis import RedisServer

    logs, tmp, archives = dirs
    name = f"load-{workers}"
    source = f"s3://{ep.bucket}/{ds.prefix}"
    batches = []
    with RedisServer(tmp / f"redis-{name}") as redis:
        service_env = {**env, **SERVICE_LIMITS, "ZIPEDGE_REDIS_URL": redis.url}
        log_path = logs / f"zipedge-{name}.log"
        async with ZipedgeServer(ep, source, log_path, service_env, workers=workers) as srv:
            with front_nginx(tmp / f"nginx-{name}", srv.port) as nginx:
                await _prepare(nginx.url, ds, streams)
                tree = ProcessTree(srv.pid)
                for mode in ("different", "same"):
                    batch = Batch(mode, workers, streams)
                    await _storage_limit(ep, ds, batch, limit_parallel, weed)
                    await run_batch(batch, nginx.url, ds, content, weed, tree, archives, {"nginx": nginx.pid})
                    batches.append(batch)
    return batches


async def measure(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    *,
    streams: int,
    worker_counts: list[int],
    limit_parallel: int,
    seaweedfs_pid: int | None,
    logs: Path,
    tmp: Path,
    archives: Path,
    log: Callable[[str], None],
) -> LoadResult:
    res = LoadResult(f"{streams} streams of {RANGE_DAYS} days x {ds.count // len(_days(ds))} x 200 KiB")
    weed = {"seaweedfs": seaweedfs_pid}
    dirs = (logs, tmp, archives)
    try:
        for workers in worker_counts:
            for batch in await _configuration(
                ep, ds, content, env, streams, workers, limit_parallel, weed, dirs
            ):
                res.batches.append(batch)
                log(f"load: {batch.describe()}")
    except Exception as exc:  # recorded; the run goes on with the other parts
        res.error = f"{type(exc).__name__}: {exc}"
        log(f"load FAILED:\n{traceback.format_exc()}")
    return res


def _days(ds: Dataset) -> list[str]:
    return sorted({o.name[:10] for o in ds.objects})


def checks(res: LoadResult) -> list[Any]:
    from bench.report import Check

    out = []
    for b in res.batches:
        where = f"{b.mode} ranges, {b.workers} process(es)"
        out.append(Check("errors == 0, every archive complete", where, str(len(b.errors)), "0", not b.errors))
        if b.ratio is not None:
            measured = f"{b.ratio:.2f} ({b.mb_per_s:.0f} / {b.limit_mb_per_s or 0:.0f} MB/s)"
            out.append(Check("aggregate x storage limit", where, measured, "", None))
    return out


def render(res: LoadResult, all_checks: list[Any]) -> str:
    from bench.report import _table, _targets

    header = [
        "ranges", "processes", "streams", "archive MB", "s", "MB/s", "limit MB/s", "x limit",
        "TTFB p50 ms", "p99 ms", "errors", "checked", "RSS MiB", "peak", "+MiB/stream",
        "CPU s service/nginx/weed",
    ]  # fmt: skip
    rows = []
    for b in res.batches:
        cpu = b.cpu_s
        rows.append(
            [
                b.mode,
                str(b.workers),
                str(b.streams),
                f"{b.bytes_total / 1e6:,.0f}",
                f"{b.seconds:.2f}",
                f"{b.mb_per_s:.0f}",
                f"{b.limit_mb_per_s:.0f}" if b.limit_mb_per_s else "-",
                f"{b.ratio:.2f}" if b.ratio is not None else "-",
                f"{(b.ttfb(0.5) or 0) * 1e3:.0f}",
                f"{(b.ttfb(0.99) or 0) * 1e3:.0f}",
                str(len(b.errors)),
                str(b.checked),
                f"{b.rss_baseline / MiB:.0f}",
                f"{b.rss_peak / MiB:.0f}",
                f"{b.rss_per_stream / MiB:.2f}",
                "/".join(f"{cpu.get(k, 0):.1f}" for k in ("service", "nginx", "seaweedfs")),
            ]
        )
    out = [
        f"Load: {res.describe}, cold (no cache), through nginx/ on loopback; nginx's per-address "
        f"limits and ZIPEDGE_MAX_STREAMS_PER_CLIENT raised (every stream comes from 127.0.0.1)",
    ]
    if rows:
        out.append(_table(header, rows, left=1))
    out.append(
        "  MB/s = archive bytes / wall time of one curl --parallel process running every stream at "
        "once; limit = one curl --parallel GETting the same objects presigned, right before. RSS: the "
        "service's processes together, before the batch and at its peak; +MiB/stream = (peak - "
        "before) / streams. Every 10th archive kept and checked member by member."
    )
    out += [f"  ERROR {e}" for e in res.errors[:20]]
    out += _targets(all_checks)
    return "\n".join(out)
