"""Event-loop pauses while large selections are resolved: `python -m bench --only loop`, or
`python -m bench.loop` alone (no SeaweedFS: neither needs storage).

The whole service runs in this process (the Starlette app through httpx's ASGI transport,
so the request body, the resolve, the manifest store and the answer all run on this
loop), over a synthetic source whose day listings are ready-made (what is timed is the
service, not a folder walk). A ticker task sleeps 1 ms at a time and records the gaps
between its wake-ups: the largest gap is the longest any other request on this process
would have waited for the loop. `idle` is the same ticker with no request, the box's own
noise floor.

One posted archive and one range of 4,000 entries run first, not counted (a process's
first large request imports and starts threads). Each case runs on a fresh app (the
date-range memo must not hide the build); the largest pause is the max over `reps` runs
(and the median of the runs' largest, less at the mercy of one preemption on a loaded
box), the time the median. `gc`: the collections of the oldest generation during the
runs, and the longest (any thread's collection stops them all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from service.app import create_app
from service.settings import Settings
from service.sources.base import ObjectInfo

TICK_S = 0.001
FIRST_DAY = date(2025, 1, 1)
DAYS = 20
WARM_UP_ENTRIES = 4_000


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    kind: str  #: "posted" (POST /v1/archives) or "range" (HEAD /v1/zip)
    entries: int


CASES = (
    Case("posted 20k", "posted", 20_000),
    Case("posted 100k", "posted", 100_000),
    Case("range 20k", "range", 20_000),
    Case("range 200k", "range", 200_000),
)


@dataclass(slots=True)
class Measured:
    name: str
    entries: int
    max_pause_ms: float = 0.0
    median_max_pause_ms: float = 0.0  #: the median over the runs of each run's largest pause
    p99_pause_ms: float = 0.0
    ticks: int = 0
    seconds: float = 0.0
    gen2_collections: int = 0
    longest_gen2_ms: float = 0.0
    status: int = 0


@dataclass(slots=True)
class LoopResult:
    idle_max_pause_ms: float = 0.0
    cases: list[Measured] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Ticker:
    """Sleeps `TICK_S` at a time on the running loop; records the gaps between wake-ups."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    async def __aenter__(self) -> _Ticker:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @property
    def max_ms(self) -> float:
        return max(self.gaps, default=0.0) * 1e3

    @property
    def p99_ms(self) -> float:
        if len(self.gaps) < 2:
            return self.max_ms
        return statistics.quantiles(self.gaps, n=100)[-1] * 1e3


class _Collections:
    """Times the collections of the oldest generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.durations.append(time.perf_counter() - self._started)

    def __enter__(self) -> _Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def _day(d: int) -> str:
    return f"{FIRST_DAY + timedelta(days=d):%Y/%m/%d}/"


def _listings(entries: int) -> dict[str, list[ObjectInfo]]:
    per_day = entries // DAYS
    return {
        _day(d): [
            ObjectInfo(
                f"{_day(d)}CAR{i:06d}-0815{i % 60:02d}.jpg", 100_000 + i, f"{d:04x}{i:028x}", 1_736_000_000
            )
            for i in range(per_day)
        ]
        for d in range(DAYS)
    }


def _posted_body(listings: dict[str, list[ObjectInfo]]) -> bytes:
    entries = [{"key": info.key, "name": f"{n % 97}.jpg"} for n, info in enumerate(_all(listings))]
    return json.dumps({"name": "picked.zip", "entries": entries}).encode()


def _all(listings: dict[str, list[ObjectInfo]]) -> list[ObjectInfo]:
    return [info for day in listings.values() for info in day]


@contextlib.asynccontextmanager
async def _service(tmp: Path, listings: dict[str, list[ObjectInfo]]) -> AsyncIterator[httpx.AsyncClient]:
    (tmp / "photos").mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{tmp / 'photos'}",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp / "var"),
            "ZIPEDGE_MAX_ENTRIES": "200000",
        }
    )
    app = create_app(settings)
    by_key = {info.key: info for info in _all(listings)}

    async def list_day(prefix: str) -> list[ObjectInfo]:
        return list(listings.get(prefix, ()))

    async def stat(key: str) -> ObjectInfo:
        return by_key[key]

    async with app.router.lifespan_context(app):
        source = app.state.services.runtime.source
        source.list, source.stat = list_day, stat  # the listings and resolver ask this object
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zipedge", timeout=300) as client:
            yield client


async def _one(case: Case, tmp: Path, listings: dict[str, list[ObjectInfo]], body: bytes) -> Measured:
    result = Measured(case.name, case.entries)
    async with _service(tmp, listings) as client:
        request: Callable[[], Any]
        if case.kind == "posted":
            headers = {"content-type": "application/json"}

            def request() -> Any:
                return client.post("/v1/archives", content=body, headers=headers)
        else:
            last = FIRST_DAY + timedelta(days=DAYS - 1)

            def request() -> Any:
                return client.head("/v1/zip", params={"from": str(FIRST_DAY), "to": str(last)})

        with _Collections() as collections:
            started = time.perf_counter()
            async with _Ticker() as ticker:
                response = await request()
            result.seconds = time.perf_counter() - started
        result.status = response.status_code
        if response.status_code not in (200, 201, 202):
            raise RuntimeError(f"{case.name}: {response.status_code} {response.text[:300]}")
    result.max_pause_ms, result.p99_pause_ms, result.ticks = ticker.max_ms, ticker.p99_ms, len(ticker.gaps)
    result.gen2_collections = len(collections.durations)
    result.longest_gen2_ms = max(collections.durations, default=0.0) * 1e3
    return result


async def measure(
    *, reps: int = 2, cases: tuple[Case, ...] = CASES, log: Callable[[str], None] | None = None
) -> LoopResult:
    out = LoopResult()
    async with _Ticker() as idle:
        await asyncio.sleep(0.5)
    out.idle_max_pause_ms = idle.max_ms
    with tempfile.TemporaryDirectory(prefix="zipedge-loop-") as tmp:
        # One of each kind first, not counted: a serving process imports a module or two and
        # starts its worker threads on its first large request, once (up to ~160 ms here).
        for kind in ("posted", "range"):
            warm = _listings(WARM_UP_ENTRIES)
            body = _posted_body(warm) if kind == "posted" else b""
            await _one(Case("warm-up", kind, WARM_UP_ENTRIES), Path(tmp) / f"warm-{kind}", warm, body)
        for n, case in enumerate(cases):
            listings = _listings(case.entries)
            body = _posted_body(listings) if case.kind == "posted" else b""
            runs = [await _one(case, Path(tmp) / f"{n}-{rep}", listings, body) for rep in range(reps)]
            worst = max(runs, key=lambda r: r.max_pause_ms)
            worst.seconds = statistics.median(r.seconds for r in runs)
            worst.median_max_pause_ms = statistics.median(r.max_pause_ms for r in runs)
            worst.gen2_collections = max(r.gen2_collections for r in runs)
            worst.longest_gen2_ms = max(r.longest_gen2_ms for r in runs)
            out.cases.append(worst)
            if log is not None:
                log(f"loop: {case.name}: largest pause {[round(r.max_pause_ms, 1) for r in runs]} ms")
    return out


def render(result: LoopResult, reps: int = 2) -> str:
    lines = [
        f"Event-loop pauses while resolving (in process, ticker sleeping {TICK_S * 1e3:g} ms; worst of "
        f"{reps} runs; idle box: largest pause {result.idle_max_pause_ms:.1f} ms)",
        f"  {'case':<13} {'entries':>8} {'max pause ms':>13} {'median max':>11} {'p99 ms':>7} "
        f"{'ticks':>6} {'time s':>7} "
        f"{'gen2 GCs':>9} {'longest GC ms':>14}",
    ]
    for c in result.cases:
        lines.append(
            f"  {c.name:<13} {c.entries:>8} {c.max_pause_ms:>13.1f} {c.median_max_pause_ms:>11.1f} "
            f"{c.p99_pause_ms:>7.1f} {c.ticks:>6} "
            f"{c.seconds:>7.2f} {c.gen2_collections:>9} {c.longest_gen2_ms:>14.1f}"
        )
    if result.error:
        lines.append(f"  error: {result.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma list of case names")
    args = p.parse_args(argv)
    wanted = {s.strip() for s in args.cases.split(",")}
    cases = tuple(c for c in CASES if c.name in wanted)
    if not cases:
        p.error(f"--cases: a comma list of {', '.join(c.name for c in CASES)}")
    result = asyncio.run(measure(reps=args.reps, cases=cases, log=lambda m: print(m, file=sys.stderr)))
    print(render(result, args.reps))


if __name__ == "__main__":
    main()
