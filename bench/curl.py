"""Debian's `curl` as the timing client: one subprocess per request, timings from curl itself.

On the 2-core VM a Python HTTP client receiving an archive costs about as much CPU as the
service producing it, and both compete for the same cores; curl writing to /dev/null costs
a fraction of that, so the figures are the service's, not the client's. curl reports its
own timings (`-w`), so spawning it is outside them.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

#: One value per line, in this order (headers by name: curl >= 7.84).
_FIELDS = (
    "%{http_code}",
    "%{time_starttransfer}",
    "%{time_total}",
    "%{size_download}",
    "%header{content-length}",
    "%header{content-type}",
    "%header{etag}",
    "%header{location}",
    "%header{content-range}",
    "%header{x-cache-status}",
)
WRITE_OUT = "\\n".join(_FIELDS) + "\\n"


class CurlError(Exception):
    """curl itself failed (could not connect, timed out, cut transfer)."""


@dataclass(frozen=True, slots=True)
class CurlResult:
    status: int
    ttfb_s: float  # time_starttransfer: request start -> first response byte (status line)
    total_s: float  # time_total: request start -> last byte
    size: int  # body bytes received
    content_length: int | None
    content_type: str
    etag: str
    location: str
    content_range: str
    cache_status: str  # X-Cache-Status (the edge)

    @property
    def range_total(self) -> int | None:
        """The complete size from `Content-Range: bytes a-b/TOTAL`, if any."""
        _, sep, total = self.content_range.rpartition("/")
        return int(total) if sep and total.strip().isdigit() else None


def curl_binary() -> str:
    found = shutil.which("curl")
    if found is None:
        raise FileNotFoundError("curl not found: apt-get install curl (or use --client httpx)")
    return found


def parse_write_out(text: str) -> CurlResult:
    """The `WRITE_OUT` lines curl printed."""
    lines = text.split("\n")
    if len(lines) < len(_FIELDS):
        raise CurlError(f"unexpected curl output {text!r}")
    status, ttfb, total, size, length, ctype, etag, location, crange, cache = (
        v.strip() for v in lines[: len(_FIELDS)]
    )
    return CurlResult(
        status=int(status),
        ttfb_s=float(ttfb),
        total_s=float(total),
        size=int(size),
        content_length=int(length) if length.isdigit() else None,
        content_type=ctype,
        etag=etag,
        location=location,
        content_range=crange,
        cache_status=cache,
    )


def command(
    url: str,
    out: Path | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    max_time_s: float = 600.0,
) -> list[str]:
    cmd = [
        curl_binary(),
        "-q",  # first: ignore any ~/.curlrc
        "--silent",
        "--show-error",
        "--noproxy",
        "*",  # loopback only, whatever *_proxy says
        "--max-time",
        f"{max_time_s:g}",
        "--output",
        str(out) if out is not None else "/dev/null",
        "--write-out",
        WRITE_OUT,
    ]
    if method == "HEAD":
        cmd.append("--head")
    elif method != "GET":
        cmd += ["--request", method]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    cmd.append(url)
    return cmd


async def spawn(cmd: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, url: str) -> CurlResult:
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise CurlError(f"curl {url}: exit {proc.returncode}: {err.decode(errors='replace').strip()}")
    return parse_write_out(out.decode(errors="replace"))


async def fetch(
    url: str,
    out: Path | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    max_time_s: float = 600.0,
) -> CurlResult:
    """One request; the body goes to `out` (or /dev/null). Redirects are not followed."""
    proc = await spawn(command(url, out, method=method, headers=headers, max_time_s=max_time_s))
    return await finish(proc, url)
