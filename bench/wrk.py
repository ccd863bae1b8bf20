"""Debian's `wrk` as the load generator: a fixed number of connections for a fixed time.

wrk's text report rounds (`1.23ms`, `2.00GB read`), so `wrk_summary.lua` adds one JSON
line with the exact counts and latency percentiles (microseconds); only its `done()` is
defined, so the request path stays wrk's static one. wrk counts every 2xx and 3xx as a
success and never follows redirects: a 302 is one complete request.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

SUMMARY_SCRIPT = Path(__file__).with_name("wrk_summary.lua")
_MARK = "WRK_SUMMARY "


class WrkError(Exception):
    """wrk failed, or its run had errors (refused connections, non-2xx/3xx answers)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    url: str
    threads: int
    connections: int
    requests: int  # complete responses
    duration_s: float
    bytes: int  # everything read, headers and partial bodies included
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration_s / 1e6

    @property
    def bytes_per_request(self) -> float:
        return self.bytes / max(self.requests, 1)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc.update(rps=self.rps, mb_per_s=self.mb_per_s, bytes_per_request=self.bytes_per_request)
        return doc


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise FileNotFoundError("wrk not found: apt-get install wrk")
    return found


def parse(output: str, *, url: str, threads: int, connections: int) -> WrkResult:
    """The summary line `wrk_summary.lua` printed, from wrk's whole stdout."""
    for line in output.splitlines():
        if line.startswith(_MARK):
            doc = json.loads(line[len(_MARK) :])
            break
    else:
        raise WrkError(f"no {_MARK.strip()} line in wrk's output:\n{output}")
    lat = doc["latency_us"]
    return WrkResult(
        url=url,
        threads=threads,
        connections=connections,
        requests=int(doc["requests"]),
        duration_s=doc["duration_us"] / 1e6,
        bytes=int(doc["bytes"]),
        p50_ms=lat["p50"] / 1e3,
        p75_ms=lat["p75"] / 1e3,
        p90_ms=lat["p90"] / 1e3,
        p99_ms=lat["p99"] / 1e3,
        max_ms=lat["max"] / 1e3,
        mean_ms=lat["mean"] / 1e3,
        errors={k: int(v) for k, v in doc["errors"].items()},
    )


async def run(
    url: str,
    *,
    threads: int = 2,
    connections: int = 32,
    duration_s: float = 10.0,
    log: Path | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """`wrk -t -c -d --latency` on `url` (with `headers` on every request); raises
    WrkError if any request failed."""
    cmd = [
        wrk_binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(SUMMARY_SCRIPT),
        *(arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")),
        url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), duration_s + 60)
    text = out.decode(errors="replace")
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{text}\n")
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}:\n{text}")
    result = parse(text, url=url, threads=threads, connections=connections)
    if result.error_count or result.requests == 0:
        raise WrkError(f"wrk on {url}: {result.requests} requests, errors {result.errors}:\n{text}")
    return result
