"""Results of a run: ratios, targets, the printed table and results.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ceiling import FetchSummary
from bench.stream import StreamRun, StreamSummary

MiB = 1024 * 1024

# The targets.
TARGET_CEILING_RATIO = 0.9  # of the concurrent-GET ceiling, in both settings
TARGET_BASELINE_RATIO = 10.0  # × the sequential baseline, with the added round trip
# The issue states the ×10 target for the 200 KiB objects (~26 s sequential vs ~2 s
# concurrent at 20 ms). For 5 MiB objects transfer time dominates the round trip, so even the
# raw ceiling is only a few times the sequential baseline: shown, not judged.
BASELINE_TARGET_DATASETS = frozenset({"small"})
TARGET_TTFB_S = 0.050  # on loopback
TARGET_RSS_EXTRA = 32 * MiB  # RSS growth allowed on top of the prefetch budget


@dataclass(slots=True)
class Row:
    setting: str  # "loopback" or "rtt20ms"
    delayed: bool
    dataset: str
    describe: str
    objects: int
    object_bytes: int
    ceilings: list[FetchSummary] = field(default_factory=list)
    baseline: FetchSummary | None = None
    stream: StreamSummary | None = None
    error: str | None = None

    @property
    def ceiling(self) -> FetchSummary | None:
        return max(self.ceilings, key=lambda s: s.objects_per_s) if self.ceilings else None

    @property
    def ratio_ceiling(self) -> float | None:
        """zipedge's object rate over the best raw GET rate (= ceiling time / zipedge time)."""
        if self.stream is None or self.ceiling is None:
            return None
        return self.objects / self.stream.total_s / self.ceiling.objects_per_s

    @property
    def ceiling_over_baseline(self) -> float | None:
        """The best any fetcher can do against the sequential baseline here."""
        if self.ceiling is None or self.baseline is None:
            return None
        return self.baseline.median_s / (self.objects / self.ceiling.objects_per_s)

    @property
    def ratio_baseline(self) -> float | None:
        """How many times faster than fetching one object after another."""
        if self.stream is None or self.baseline is None:
            return None
        return self.baseline.median_s / self.stream.total_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "dataset": self.dataset,
            "describe": self.describe,
            "objects": self.objects,
            "object_bytes": self.object_bytes,
            "ceiling_best": self.ceiling.as_dict() if self.ceiling else None,
            "ceiling_by_concurrency": [c.as_dict() for c in self.ceilings],
            "sequential_baseline": self.baseline.as_dict() if self.baseline else None,
            "zipedge": self.stream.as_dict() if self.stream else None,
            "ratio_to_ceiling": self.ratio_ceiling,
            "ratio_to_baseline": self.ratio_baseline,
            "ceiling_over_baseline": self.ceiling_over_baseline,
            "error": self.error,
        }


@dataclass(slots=True)
class HugeResult:
    describe: str
    run: StreamRun | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "describe": self.describe,
            "run": self.run.as_dict() if self.run else None,
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


def checks(rows: list[Row], huge: HugeResult | None, prefetch_bytes: int) -> list[Check]:
    rss_limit = TARGET_RSS_EXTRA + prefetch_bytes
    rss_limit_text = f"{TARGET_RSS_EXTRA / MiB:.0f} + {prefetch_bytes / MiB:.0f} MiB"
    out: list[Check] = []
    for row in rows:
        where = f"{row.setting}/{row.dataset}"
        if row.stream is None:
            continue
        if row.ratio_ceiling is not None:
            out.append(
                Check(
                    "ratio to ceiling",
                    where,
                    f"{row.ratio_ceiling:.2f}",
                    f">= {TARGET_CEILING_RATIO}",
                    row.ratio_ceiling >= TARGET_CEILING_RATIO,
                )
            )
        if row.delayed and row.ratio_baseline is not None:
            if row.dataset in BASELINE_TARGET_DATASETS:
                limit, passed = (
                    f">= {TARGET_BASELINE_RATIO:.0f}x",
                    row.ratio_baseline >= TARGET_BASELINE_RATIO,
                )
            else:
                limit, passed = f"none; the ceiling itself is {row.ceiling_over_baseline:.1f}x", None
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


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = "  ".join(
        h.rjust(w) if i > 1 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    sep = "  ".join("-" * w for w in widths)
    body = [
        "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return "\n".join([line, sep, *body])


def render(rows: list[Row], huge: HugeResult | None, all_checks: list[Check], notes: list[str]) -> str:
    header = [
        "setting",
        "dataset",
        "ceil obj/s",
        "ceil MB/s",
        "seq s",
        "seq MB/s",
        "zipedge s",
        "MB/s",
        "TTFB ms",
        "peak RSS",
        "+RSS",
        "x ceil",
        "x seq",
    ]
    table_rows: list[list[str]] = []
    for r in rows:
        c, b, s = r.ceiling, r.baseline, r.stream
        table_rows.append(
            [
                r.setting,
                f"{r.dataset} ({r.describe})",
                _f(c.objects_per_s if c else None, ".0f") + (f" @{c.concurrency}" if c else ""),
                _f(c.mb_per_s if c else None, ".1f"),
                _f(b.median_s if b else None, ".2f"),
                _f(b.mb_per_s if b else None, ".1f"),
                _f(s.total_s if s else None, ".2f"),
                _f(s.mb_per_s if s else None, ".1f"),
                _f(s.ttfb_s * 1e3 if s else None, ".1f"),
                _f(s.rss_peak / MiB if s else None, ".0f") + (" MiB" if s else ""),
                _f(s.rss_growth / MiB if s else None, ".1f") + (" MiB" if s else ""),
                _f(r.ratio_ceiling, ".2f"),
                _f(r.ratio_baseline, ".1f"),
            ]
        )
    out = [_table(header, table_rows)]
    errors = [f"  {r.setting}/{r.dataset}: ERROR {_short(r.error)}" for r in rows if r.error]
    if errors:
        out += ["", "Errors:", *errors]
    if huge is not None:
        out += ["", f"Flat RSS while streaming one large archive (loopback, {huge.describe}):"]
        if huge.run is not None:
            run = huge.run
            marks = ", ".join(f"{k}: {v / MiB:.0f}" for k, v in run.rss_at.items())
            out.append(
                f"  {run.received / 1e9:.2f} GB in {run.total_s:.1f} s ({run.mb_per_s:.0f} MB/s), "
                f"RSS MiB: baseline {run.rss_baseline / MiB:.0f}, {marks}, peak {run.rss_peak / MiB:.0f} "
                f"(growth {run.rss_growth / MiB:.1f})"
            )
        else:
            out.append(f"  ERROR {_short(huge.error or '')}")
    if all_checks:
        out += ["", "Targets (informational):"]
        width = max(len(f"{k.what} [{k.where}]") for k in all_checks)
        for k in all_checks:
            label = f"{k.what} [{k.where}]".ljust(width)
            verdict = "info" if k.passed is None else "PASS" if k.passed else "FAIL"
            out.append(f"  {verdict:4}  {label}  {k.measured} (target {k.limit})")
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def write_json(
    path: Path, meta: dict[str, Any], rows: list[Row], huge: HugeResult | None, all_checks: list[Check]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "rows": [r.as_dict() for r in rows],
        "huge": huge.as_dict() if huge else None,
        "targets": [c.as_dict() for c in all_checks],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
