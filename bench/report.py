"""Results of a run: ratios, targets, the printed table and results.json."""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cached import EdgeResult, RedirectResult
from bench.ceiling import FetchSummary
from bench.cpu import ms_per_object
from bench.dataset import human_size
from bench.jobs import JobsResult
from bench.stream import StreamRun, StreamSummary
from bench.wrk import WrkResult

MiB = 1024 * 1024

# Stream targets.
TARGET_LIMIT_RATIO = 0.9  # × the storage limit (MB/s), loopback, the 200 KiB objects
LIMIT_TARGET_DATASETS = frozenset({"small"})
TARGET_SERVICE_CPU_MS = 0.3  # service CPU per 200 KiB object, every setting
CPU_TARGET_DATASETS = frozenset({"small"})
TARGET_BASELINE_RATIO = 10.0  # × the sequential baseline, with the added round trip
# The ×10 target is stated for the 200 KiB objects (~26 s sequential vs ~2 s concurrent at
# 20 ms). For 5 MiB objects transfer time dominates the round trip, so even the storage
# limit is only a few times the sequential baseline: shown, not judged.
BASELINE_TARGET_DATASETS = frozenset({"small"})
TARGET_TTFB_S = 0.050  # on loopback
TARGET_RSS_EXTRA = 32 * MiB  # RSS growth allowed on top of the prefetch budget
# Redirects and the edge (a cached 30-day range, one service process).
TARGET_REDIRECT_P50_S = 0.002
TARGET_REDIRECT_RATIO = 0.25  # × the trivial Starlette redirect's requests/s
TARGET_EDGE_RATIO = 0.5  # edge HIT × nginx serving the same file from disk


def _best_by_mb(summaries: list[FetchSummary]) -> FetchSummary | None:
    return max(summaries, key=lambda s: s.mb_per_s) if summaries else None


@dataclass(slots=True)
class Row:
    setting: str  # "loopback" or "rtt20ms"
    delayed: bool
    dataset: str
    describe: str
    objects: int
    object_bytes: int
    # The storage limit (one curl --parallel process), one summary per --parallel-max.
    limits: list[FetchSummary] = field(default_factory=list)
    # aioboto3 GETs, no ZIP (informational), one summary per concurrency.
    python_client: list[FetchSummary] = field(default_factory=list)
    baseline: FetchSummary | None = None
    stream: StreamSummary | None = None
    error: str | None = None

    @property
    def object_size(self) -> int:
        return self.object_bytes // self.objects if self.objects else 0

    @property
    def limit(self) -> FetchSummary | None:
        """The best storage-limit level (highest median MB/s)."""
        return _best_by_mb(self.limits)

    @property
    def python_best(self) -> FetchSummary | None:
        return _best_by_mb(self.python_client)

    def ratio_to(self, ref: FetchSummary | None) -> float | None:
        """zipedge MB/s (archive bytes) over `ref`'s MB/s (object bytes)."""
        if self.stream is None or ref is None:
            return None
        return self.stream.mb_per_s / ref.mb_per_s

    @property
    def ratio_limit(self) -> float | None:
        """x storage limit: zipedge MB/s over the storage limit's MB/s."""
        return self.ratio_to(self.limit)

    @property
    def limit_over_baseline(self) -> float | None:
        """The best the storage can do against the sequential baseline here."""
        if self.limit is None or self.baseline is None:
            return None
        return self.baseline.median_s / self.limit.median_s

    @property
    def ratio_baseline(self) -> float | None:
        """How many times faster than fetching one object after another."""
        if self.stream is None or self.baseline is None:
            return None
        return self.baseline.median_s / self.stream.total_s

    def stream_ms_per_object(self, name: str, *, system: bool = False) -> float | None:
        """CPU per object of one process ("service", "seaweedfs", "proxy") during the
        zipedge streams (median of the runs); `system`: only its kernel-mode part."""
        if self.stream is None:
            return None
        values = [
            (r.cpu_system_s if system else r.cpu_s)[name]
            for r in self.stream.runs
            if name in (r.cpu_system_s if system else r.cpu_s)
        ]
        return ms_per_object(statistics.median(values), self.objects) if values else None

    @property
    def service_ms_per_object(self) -> float | None:
        return self.stream_ms_per_object("service")

    @property
    def receiver_ms_per_object(self) -> float | None:
        """The stream client's CPU per object (the curl that receives the archive)."""
        if self.stream is None or not self.stream.runs:
            return None
        return ms_per_object(statistics.median(r.client_cpu_s for r in self.stream.runs), self.objects)

    def cpu_budget(self) -> tuple[float, float, float] | None:
        """Where every process shares the same saturated cores (loopback here), what the
        CPU per object allows: (the storage limit's cost, ms per object: curl + SeaweedFS;
        zipedge's: service + SeaweedFS + the receiving client; the x storage limit of a
        zipper that cost only what curl costs to fetch, its bytes sent for free)."""
        limit = self.limit
        if limit is None:
            return None
        curl, weed_limit = limit.cpu_ms_per_object, limit.server_ms_per_object("seaweedfs")
        service, weed = self.service_ms_per_object, self.stream_ms_per_object("seaweedfs")
        receiver = self.receiver_ms_per_object
        if curl is None or weed_limit is None or service is None or weed is None or receiver is None:
            return None
        limit_cost = curl + weed_limit
        return limit_cost, service + weed + receiver, limit_cost / (curl + weed + receiver)

    def as_dict(self) -> dict[str, Any]:
        limit, python = self.limit, self.python_best
        return {
            "setting": self.setting,
            "dataset": self.dataset,
            "describe": self.describe,
            "objects": self.objects,
            "object_bytes": self.object_bytes,
            "storage_limit_best": limit.as_dict() if limit else None,
            "storage_limit_by_parallel": [c.as_dict() for c in self.limits],
            "python_client_best": python.as_dict() if python else None,
            "python_client_by_concurrency": [c.as_dict() for c in self.python_client],
            "sequential_baseline": self.baseline.as_dict() if self.baseline else None,
            "zipedge": self.stream.as_dict() if self.stream else None,
            "ratio_to_storage_limit": self.ratio_limit,
            "ratio_to_python_client": self.ratio_to(python),
            "ratio_to_baseline": self.ratio_baseline,
            "storage_limit_over_baseline": self.limit_over_baseline,
            "service_cpu_ms_per_object": self.service_ms_per_object,
            "receiver_cpu_ms_per_object": self.receiver_ms_per_object,
            "service_cpu_system_ms_per_object": self.stream_ms_per_object("service", system=True),
            "seaweedfs_cpu_ms_per_object": self.stream_ms_per_object("seaweedfs"),
            "proxy_cpu_ms_per_object": self.stream_ms_per_object("proxy"),
            "storage_limit_curl_cpu_ms_per_object": limit.cpu_ms_per_object if limit else None,
            "storage_limit_seaweedfs_cpu_ms_per_object": (
                limit.server_ms_per_object("seaweedfs") if limit else None
            ),
            "error": self.error,
        }


@dataclass(slots=True)
class HugeResult:
    describe: str
    objects: int = 0
    run: StreamRun | None = None
    error: str | None = None

    def cpu_ms_per_object(self, name: str) -> float | None:
        return ms_per_object(self.run.cpu_s.get(name), self.objects) if self.run else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "describe": self.describe,
            "objects": self.objects,
            "run": self.run.as_dict() if self.run else None,
            "service_cpu_ms_per_object": self.cpu_ms_per_object("service"),
            "seaweedfs_cpu_ms_per_object": self.cpu_ms_per_object("seaweedfs"),
            "error": self.error,
        }


@dataclass(slots=True)
class Check:
    what: str
    where: str
    measured: str
    limit: str
    passed: bool | None  # None: shown for information, no target applies

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.what,
            "where": self.where,
            "measured": self.measured,
            "limit": self.limit,
            "pass": self.passed,
        }


def _count_x_size(row: Row) -> str:
    return f"{row.objects:,} x {human_size(row.object_size)}"


def _limit_check(row: Row) -> Check | None:
    ratio, limit, s = row.ratio_limit, row.limit, row.stream
    if ratio is None or limit is None or s is None:
        return None
    measured = f"{ratio:.2f} ({s.mb_per_s:.1f} / {limit.mb_per_s:.1f} MB/s)"
    if row.delayed or row.dataset not in LIMIT_TARGET_DATASETS:
        return Check("x storage limit", f"{row.setting}/{row.dataset}", measured, "", None)
    return Check(
        f"zipedge >= {TARGET_LIMIT_RATIO} x storage limit at {row.setting} ({_count_x_size(row)})",
        "",
        measured,
        "",
        ratio >= TARGET_LIMIT_RATIO,
    )


def _cpu_check(row: Row) -> Check | None:
    cpu = row.service_ms_per_object
    if cpu is None:
        return None
    where = f"{row.setting}/{row.dataset}"
    system = row.stream_ms_per_object("service", system=True)
    weed = row.stream_ms_per_object("seaweedfs")
    measured = f"{cpu:.3f} ms (system {_ms(system)}; SeaweedFS {_ms(weed)})"
    size = human_size(row.object_size)
    if row.dataset not in CPU_TARGET_DATASETS:
        return Check(f"service CPU per {size} object", where, measured, "", None)
    return Check(
        f"service CPU <= {TARGET_SERVICE_CPU_MS} ms per {size} object",
        where,
        measured,
        "",
        cpu <= TARGET_SERVICE_CPU_MS,
    )


def _budget_check(row: Row) -> Check | None:
    """On loopback the storage limit and zipedge are both CPU-bound on the same cores: the
    ratio their CPU per object predicts, beside the measured one, and the best a zipper
    as lean as curl could reach here (informational)."""
    budget = row.cpu_budget() if not row.delayed else None
    if budget is None or row.ratio_limit is None:
        return None
    limit_cost, zipedge_cost, lean = budget
    return Check(
        "CPU budget of the shared cores",
        f"{row.setting}/{row.dataset}",
        f"measured {row.ratio_limit:.2f}; CPU per object predicts {limit_cost / zipedge_cost:.2f} "
        f"(limit {limit_cost:.3f} ms: curl + SeaweedFS; zipedge {zipedge_cost:.3f} ms: service + "
        f"SeaweedFS + receiving curl); a zipper costing what curl costs: {lean:.2f}",
        "",
        None,
    )


def checks(rows: list[Row], huge: HugeResult | None, prefetch_bytes: int) -> list[Check]:
    rss_limit = TARGET_RSS_EXTRA + prefetch_bytes
    rss_limit_text = f"{TARGET_RSS_EXTRA / MiB:.0f} + {prefetch_bytes / MiB:.0f} MiB"
    out: list[Check] = []
    for row in rows:
        where = f"{row.setting}/{row.dataset}"
        if row.stream is None:
            continue
        out += [c for c in (_limit_check(row), _cpu_check(row), _budget_check(row)) if c is not None]
        if row.delayed and row.ratio_baseline is not None:
            if row.dataset in BASELINE_TARGET_DATASETS:
                limit, passed = (
                    f">= {TARGET_BASELINE_RATIO:.0f}x",
                    row.ratio_baseline >= TARGET_BASELINE_RATIO,
                )
            else:
                limit, passed = (
                    f"none; the storage limit itself is {_f(row.limit_over_baseline, '.1f')}x",
                    None,
                )
            out.append(Check("ratio to sequential", where, f"{row.ratio_baseline:.1f}x", limit, passed))
        if not row.delayed:
            ttfb = row.stream.ttfb_s
            out.append(
                Check(
                    "TTFB",
                    where,
                    f"{ttfb * 1e3:.1f} ms",
                    f"<= {TARGET_TTFB_S * 1e3:.0f} ms",
                    ttfb <= TARGET_TTFB_S,
                )
            )
        growth = row.stream.rss_growth
        out.append(Check("RSS growth", where, f"{growth / MiB:.1f} MiB", rss_limit_text, growth <= rss_limit))
    if huge is not None and huge.run is not None:
        growth = huge.run.rss_growth
        out.append(
            Check(
                "RSS growth",
                f"huge ({huge.describe})",
                f"{growth / MiB:.1f} MiB",
                rss_limit_text,
                growth <= rss_limit,
            )
        )
    return out


def _short(error: str) -> str:
    """First and last line of an error (a service's traceback is in its log, not the table)."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if len(lines) <= 2:
        return " ".join(lines)
    return f"{lines[0]} … {lines[-1]}"


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]], left: int = 2) -> str:
    """Columns aligned; the first `left` ones to the left (labels), the rest to the right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def _ms(value: float | None) -> str:
    return _f(value, ".3f")


def _stream_table(rows: list[Row]) -> str:
    header = [
        "setting",
        "dataset",
        "limit MB/s",
        "zipedge s",
        "MB/s",
        "x storage limit",
        "service CPU ms/object",
        "SeaweedFS ms/obj",
        "TTFB ms",
        "1st TTFB",
        "peak RSS",
        "+RSS",
        "x seq",
    ]
    table_rows: list[list[str]] = []
    for r in rows:
        lim, s = r.limit, r.stream
        table_rows.append(
            [
                r.setting,
                r.describe,
                _f(lim.mb_per_s if lim else None, ".1f") + (f" @{lim.concurrency}" if lim else ""),
                _f(s.total_s if s else None, ".2f"),
                _f(s.mb_per_s if s else None, ".1f"),
                _f(r.ratio_limit, ".2f"),
                _ms(r.service_ms_per_object),
                _ms(r.stream_ms_per_object("seaweedfs")),
                _f(s.ttfb_s * 1e3 if s else None, ".1f"),
                _f(s.first_ttfb_s * 1e3 if s else None, ".1f"),
                _f(s.rss_peak / MiB if s else None, ".0f") + (" MiB" if s else ""),
                _f(s.rss_growth / MiB if s else None, ".1f") + (" MiB" if s else ""),
                _f(r.ratio_baseline, ".1f"),
            ]
        )
    return _table(header, table_rows)


def _reference_row(label: str, ref: FetchSummary, row: Row, best: bool) -> list[str]:
    return [
        label,
        f"{ref.concurrency}{'*' if best else ''}",
        f"{ref.median_s:.2f}",
        f"{ref.objects_per_s:,.0f}",
        f"{ref.mb_per_s:.1f}",
        _ms(ref.cpu_ms_per_object),
        _ms(ref.server_ms_per_object("seaweedfs")),
        _f(row.ratio_to(ref), ".2f"),
    ]


def _references_table(rows: list[Row]) -> str:
    """Every reference of every cell, and zipedge beside them with the same CPU columns."""
    header = [
        "setting",
        "dataset",
        "what",
        "N",
        "s",
        "obj/s",
        "MB/s",
        "fetcher CPU ms/obj",
        "SeaweedFS ms/obj",
        "zipedge ÷",
    ]
    table_rows: list[list[str]] = []
    for r in rows:
        group: list[list[str]] = []
        best_limit, best_python = r.limit, r.python_best
        for ref in r.limits:
            group.append(_reference_row("storage limit: curl --parallel", ref, r, ref is best_limit))
        for ref in r.python_client:
            group.append(_reference_row("python client, no ZIP (aioboto3)", ref, r, ref is best_python))
        if r.baseline is not None:
            group.append(_reference_row("sequential (aioboto3)", r.baseline, r, False))
        if r.stream is not None:
            s = r.stream
            group.append(
                [
                    "zipedge (service: GETs + ZIP)",
                    "-",
                    f"{s.total_s:.2f}",
                    f"{r.objects / s.total_s:,.0f}",
                    f"{s.mb_per_s:.1f}",
                    _ms(r.service_ms_per_object),
                    _ms(r.stream_ms_per_object("seaweedfs")),
                    "1.00",
                ]
            )
        for i, cells in enumerate(group):
            table_rows.append([r.setting if i == 0 else "", r.describe if i == 0 else "", *cells])
    return _table(header, table_rows, left=3)


def render(rows: list[Row], huge: HugeResult | None, all_checks: list[Check], notes: list[str]) -> str:
    out = [_stream_table(rows)]
    if any(r.limits or r.python_client or r.baseline for r in rows):
        out += [
            "",
            "References, measured in the same run (medians; * = the best level):",
            _references_table(rows),
        ]
    errors = [f"  {r.setting}/{r.dataset}: ERROR {_short(r.error)}" for r in rows if r.error]
    if errors:
        out += ["", "Errors:", *errors]
    if huge is not None:
        out += ["", f"Flat RSS while streaming one large archive (loopback, {huge.describe}):"]
        if huge.run is not None:
            run = huge.run
            marks = ", ".join(f"{k}: {v / MiB:.0f}" for k, v in run.rss_at.items())
            cpu = ", ".join(
                f"{name} {ms:.2f}"
                for name in ("service", "seaweedfs")
                if (ms := huge.cpu_ms_per_object(name)) is not None
            )
            out.append(
                f"  {run.received / 1e9:.2f} GB in {run.total_s:.1f} s ({run.mb_per_s:.0f} MB/s), "
                f"RSS MiB: baseline {run.rss_baseline / MiB:.0f}, {marks}, peak {run.rss_peak / MiB:.0f} "
                f"(growth {run.rss_growth / MiB:.1f})" + (f"; CPU ms/object: {cpu}" if cpu else "")
            )
        else:
            out.append(f"  ERROR {_short(huge.error or '')}")
    out += _targets(all_checks)
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def _targets(all_checks: list[Check]) -> list[str]:
    if not all_checks:
        return []
    out = ["", "Targets (informational):"]
    labels = [f"{k.what} [{k.where}]" if k.where else k.what for k in all_checks]
    width = max(len(label) for label in labels)
    for k, label in zip(all_checks, labels, strict=True):
        verdict = "info" if k.passed is None else "PASS" if k.passed else "FAIL"
        target = f" (target {k.limit})" if k.limit else ""
        out.append(f"  {verdict:4}  {label.ljust(width)}  {k.measured}{target}")
    return out


# --- redirects and the edge -------------------------------------------------------------------


def redirect_checks(res: RedirectResult) -> list[Check]:
    if res.zipedge is None:
        return []
    where = f"cached range, {res.describe}"
    out: list[Check] = []
    if res.zipedge_single is not None:
        # The latency target is checked without queueing. Under N connections in a closed
        # loop p50 is about N / (req/s) (Little's law): at 32 connections even the trivial
        # app sits near 2 ms, and 0.25 x its req/s (the throughput target) means ~7 ms.
        single = res.zipedge_single
        out.append(
            Check(
                "redirect p50, 1 connection",
                where,
                f"{single.p50_ms:.2f} ms (p99 {single.p99_ms:.1f} ms)",
                f"<= {TARGET_REDIRECT_P50_S * 1e3:.0f} ms",
                single.p50_ms <= TARGET_REDIRECT_P50_S * 1e3,
            )
        )
    trivial_p50 = f", trivial {res.trivial.p50_ms:.2f} ms" if res.trivial is not None else ""
    out.append(
        Check(
            f"redirect p50, {res.zipedge.connections} connections",
            where,
            f"{res.zipedge.p50_ms:.2f} ms (p99 {res.zipedge.p99_ms:.1f} ms{trivial_p50})",
            "none (queueing: about connections / req/s)",
            None,
        )
    )
    if res.ratio is not None and res.trivial is not None:
        out.append(
            Check(
                "redirect req/s vs trivial",
                where,
                f"{res.ratio:.3f} ({res.zipedge.rps:.0f} / {res.trivial.rps:.0f})",
                f">= {TARGET_REDIRECT_RATIO}",
                res.ratio >= TARGET_REDIRECT_RATIO,
            )
        )
    return out


def edge_checks(res: EdgeResult) -> list[Check]:
    if res.ratio is None or res.edge is None or res.static is None:
        return []
    return [
        Check(
            "edge HIT vs static file",
            f"{res.archive_bytes / 1e6:.1f} MB archive",
            f"{res.ratio:.2f} ({res.edge.mb_per_s:.0f} / {res.static.mb_per_s:.0f} MB/s)",
            f">= {TARGET_EDGE_RATIO}",
            res.ratio >= TARGET_EDGE_RATIO,
        )
    ]


def _wrk_row(label: str, r: WrkResult, *extra: str) -> list[str]:
    return [
        label,
        str(r.connections),
        f"{r.requests:,}",
        f"{r.rps:,.0f}",
        f"{r.mb_per_s:,.1f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        f"{r.max_ms:.1f}",
        *extra,
    ]


_WRK_HEADER = ["server", "conns", "requests", "req/s", "MB/s", "p50 ms", "p99 ms", "max ms"]


def render_redirects(res: RedirectResult, all_checks: list[Check], wrk_line: str) -> str:
    out = [f"Redirects: cached range {res.describe} (archive {res.archive_bytes / 1e6:.1f} MB), {wrk_line}"]
    rows: list[list[str]] = []
    cpu = {"zipedge": res.zipedge_cpu_ms, "trivial": res.trivial_cpu_ms}
    for label, key, runs in (
        ("zipedge GET /v1/zip (302)", "zipedge", (res.zipedge, res.zipedge_single)),
        ("trivial Starlette 302", "trivial", (res.trivial, res.trivial_single)),
    ):
        for r in runs:
            if r is not None:
                rows.append(_wrk_row(label, r, _f(cpu[key], ".3f")))
    if rows:
        out.append(_table([*_WRK_HEADER, "CPU ms/req"], rows, left=1))
    if res.ratio is not None:
        out.append(
            f"  zipedge / trivial req/s: {res.ratio:.3f}. CPU ms/req: the server's CPU over both its runs."
        )
    if res.build is not None:
        out.append(
            f"  the range's first GET: 200 stream, {res.build.total_s:.2f} s, TTFB "
            f"{res.build.ttfb_s * 1e3:.0f} ms, archive checked ({res.build.members} members); cache "
            f"object committed {res.commit_wait_s:.2f} s after it ended; Location {len(res.location)} B"
        )
    if res.statuses:
        out.append(f"  /v1/zip answers during the runs (service metrics): {res.statuses}")
    if res.error:
        out.append(f"  ERROR {_short(res.error)}")
    out += _targets(all_checks)
    return "\n".join(out)


def render_edge(res: EdgeResult, all_checks: list[Check], wrk_line: str) -> str:
    out = [f"Edge: one cached archive of {res.archive_bytes / 1e6:.1f} MB, {wrk_line}"]
    rows: list[list[str]] = []
    if res.edge is not None:
        rows.append(_wrk_row("edge nginx, HIT (presigned URL)", res.edge, f"{res.edge_cpu_s:.2f}"))
    if res.static is not None:
        rows.append(_wrk_row("nginx static file, sendfile", res.static, f"{res.static_cpu_s:.2f}"))
    if rows:
        out.append(_table([*_WRK_HEADER, "nginx CPU s"], rows, left=1))
    if res.ratio is not None and res.ratio_rps is not None:
        out.append(f"  edge / static: {res.ratio:.2f} by MB/s, {res.ratio_rps:.2f} by req/s")
    if res.cache_statuses:
        out.append(f"  edge cache status during the run (access log): {res.cache_statuses}")
    if res.error:
        out.append(f"  ERROR {_short(res.error)}")
    out += _targets(all_checks)
    return "\n".join(out)


# --- jobs ------------------------------------------------------------------------------------


#: A job of a range against streaming the same bytes, in one run.
JOB_OVER_STREAM_TARGET = 1.3


def jobs_checks(res: JobsResult) -> list[Check]:
    out: list[Check] = []
    folder_runs = " / ".join(f"{run.seconds:.2f}" for run, _ in res.folder_runs)
    for job, where, runs in (
        (res.big, "S3 cache", ""),
        (
            res.folder,
            "folder cache in memory",
            f"; median of {folder_runs} s" if len(res.folder_runs) > 1 else "",
        ),
    ):
        ratio = res.over_stream(job)
        if ratio is None or job is None or res.stream is None:
            continue
        out.append(
            Check(
                "job POST->ready <= 1.3 x stream",
                f"{res.describe}, {where}",
                f"{ratio:.2f}x the stream's time ({job.seconds:.2f} s vs {res.stream.total_s:.2f} s{runs})",
                f"<= {JOB_OVER_STREAM_TARGET}",
                ratio <= JOB_OVER_STREAM_TARGET,
            )
        )
    if res.ingest is not None and res.big is not None and res.big.seconds:
        ing = res.ingest
        per_mb = ing.storage_ms_per_mb
        out.append(
            Check(
                "storage ingest alone vs the S3-cache job",
                f"{ing.bytes_total / 1e6:,.0f} MB, {ing.part_bytes // 2**20} MiB parts",
                f"{ing.seconds:.2f} s ({ing.seconds / res.big.seconds:.2f} of the job's time)"
                + (f", SeaweedFS {per_mb:.1f} ms of CPU per MB stored" if per_mb is not None else ""),
                "",
                None,
            )
        )
    if res.big is not None and res.big.seconds and res.big_cpu_s:
        cores = os.cpu_count() or 1
        cpu = sum(res.big_cpu_s.values())
        weed = res.big_cpu_s.get("seaweedfs")
        out.append(
            Check(
                "S3-cache job against the CPU floor of the shared cores",
                f"{res.describe}, {cores} cores",
                f"{res.big.seconds:.2f} s; every process's CPU meanwhile / {cores} cores = "
                f"{cpu / cores:.2f} s" + (f" (SeaweedFS {weed:.1f} of {cpu:.1f} CPU s)" if weed else ""),
                "",
                None,
            )
        )
    for b in res.batches:
        if b.jobs_per_min is not None:
            out.append(
                Check(
                    "jobs/minute",
                    f"{b.workers} worker(s), {res.batch_describe}",
                    f"{b.jobs_per_min:.1f}",
                    "none stated",
                    None,
                )
            )
    return out


def render_jobs(res: JobsResult, all_checks: list[Check], client: str) -> str:
    out = [f"Jobs: {res.describe} ({res.object_bytes / 1e9:.2f} GB of objects)"]
    header = ["what", "workers", "archive MB", "s", "MB/s", "x stream", _CPU_HEADER]
    rows: list[list[str]] = []
    stream_s = res.stream.total_s if res.stream else None
    if res.stream is not None:
        st = res.stream
        rows.append(
            [
                f"stream, {client} (median of {len(st.runs)})",
                "-",
                f"{st.archive_bytes / 1e6:,.0f}",
                f"{st.total_s:.2f}",
                f"{st.mb_per_s:.0f}",
                "1.00",
                f"-/{statistics.median(r.service_cpu_s for r in st.runs):.1f}/-",
            ]
        )
    if res.ingest is not None and res.ingest.seconds:
        ing = res.ingest
        rows.append(
            [
                f"storage ingest alone ({ing.part_bytes // 2**20} MiB parts x{ing.parts_in_flight})",
                "-",
                f"{ing.bytes_total / 1e6:,.0f}",
                f"{ing.seconds:.2f}",
                f"{ing.mb_per_s:.0f}",
                _f(ing.seconds / stream_s if stream_s else None, ".2f"),
                f"-/-/{ing.cpu_s['seaweedfs']:.1f}" if "seaweedfs" in ing.cpu_s else "-",
            ]
        )
    for job, what, cpu in (
        (res.folder, "job, folder cache in memory", res.folder_cpu_s),
        (res.big, "job, S3 cache: POST -> ready", res.big_cpu_s),
    ):
        if job is not None and job.seconds:
            rows.append(
                [
                    what,
                    "1",
                    f"{job.bytes_total / 1e6:,.0f}",
                    f"{job.seconds:.2f}",
                    f"{job.mb_per_s:.0f}",
                    _f(job.seconds / stream_s if stream_s else None, ".2f"),
                    _cpu(cpu),
                ]
            )
    if rows:
        out.append(_table(header, rows, left=1))
    batch_rows = [
        [
            f"{len(b.jobs)} jobs at once",
            str(b.workers),
            f"{b.bytes_total / 1e6:,.0f}",
            f"{b.wall_s:.2f}",
            f"{b.bytes_total / b.wall_s / 1e6:.0f}" if b.wall_s else "-",
            _f(b.jobs_per_min, ".1f"),
            _cpu(b.cpu_s),
        ]
        for b in res.batches
        if b.error is None
    ]
    if batch_rows:
        out += ["", f"Jobs per minute: {res.batch_describe}, posted at once"]
        batch_header = ["what", "workers", "archive MB", "wall s", "MB/s", "jobs/min", _CPU_HEADER]
        out.append(_table(batch_header, batch_rows, left=1))
    out += [f"  ERROR {_short(e)}" for e in res.errors]
    out += _targets(all_checks)
    return "\n".join(out)


_CPU_HEADER = "CPU s workers/service/weed"


def _cpu(cpu: dict[str, float]) -> str:
    if not cpu:
        return "-"
    return "/".join(f"{cpu.get(k, 0.0):.1f}" for k in ("workers", "service", "seaweedfs"))


def write_json(
    path: Path,
    meta: dict[str, Any],
    rows: list[Row],
    huge: HugeResult | None,
    all_checks: list[Check],
    *,
    redirects: RedirectResult | None = None,
    edge: EdgeResult | None = None,
    jobs: JobsResult | None = None,
    identity: dict[str, Any] | None = None,
    ranges: dict[str, Any] | None = None,
    loop: dict[str, Any] | None = None,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "rows": [r.as_dict() for r in rows],
        "huge": huge.as_dict() if huge else None,
        "redirects": redirects.as_dict() if redirects else None,
        "edge": edge.as_dict() if edge else None,
        "jobs": jobs.as_dict() if jobs else None,
        "identity": identity,
        "ranges": ranges,
        "loop": loop,
        "targets": [c.as_dict() for c in all_checks],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
