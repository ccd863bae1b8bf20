"""`python -m bench --profile`: where the service's CPU goes during one cold stream.

The service (`zipedge serve`, no cache, no Redis, loopback SeaweedFS) gets its warm-up
request, then one cold stream of the small dataset (1,000 × 200 KiB; `--quick`: 200) is
profiled and checked member by member like any stream:

* py-spy (the default when it can attach): `py-spy record --pid <service>` is attached
  right before the request and stopped with SIGINT right after the last byte, so the
  profile holds that one stream and nothing else (received into /dev/null like every timed
  run; the checked copy is fetched after py-spy has let go). It writes an SVG flamegraph
  (`--profile-format flamegraph`) or a speedscope JSON file (`speedscope`). Attaching needs
  ptrace on the service process; `py-spy dump` is tried first.
* cProfile (`--profiler cprofile`, or when py-spy cannot attach): the service is started
  as `python -m cProfile -o <file> -m service serve ...`; the stats are written when it
  exits, so they hold its whole life: start-up, the 32-object warm-up and the stream (which
  is the checked copy itself here, so that only one full stream is in the profile).
  cProfile sees the main thread only and slows Python-heavy code down severalfold: read
  it for call counts and relative cost, not for time.

Output goes next to `--out` (var/bench/ by default); the command line says which
profiler ran, and the timing of the profiled stream (slowed down by the profiler).
"""

from __future__ import annotations

import asyncio
import io
import pstats
import shutil
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import ms_per_object
from bench.dataset import Content, Dataset
from bench.s3 import S3Endpoint
from bench.stack import ZipedgeServer
from bench.stream import BenchError, StreamRun, StreamSession

PROFILERS = ("auto", "py-spy", "cprofile")
PY_SPY_FORMATS = ("flamegraph", "speedscope")
PY_SPY_RATE = 250  # samples per second (py-spy: 100 by default; a stream lasts well under a second)
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
SUFFIX = {"flamegraph": ".svg", "speedscope": ".speedscope.json"}


def py_spy_binary() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


async def _run(*cmd: str, limit_s: float = 30.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{cmd[0]} timed out after {limit_s:g} s"
    return proc.returncode or 0, out.decode(errors="replace")


async def py_spy_unavailable(pid: int) -> str | None:
    """None if py-spy can read `pid`'s stacks, else why not (not installed, ptrace refused...)."""
    binary = py_spy_binary()
    if binary is None:
        return "py-spy is not installed (pip install -e '.[dev]')"
    code, out = await _run(binary, "dump", "--pid", str(pid))
    if code != 0:
        lines = [line for line in out.strip().splitlines() if line.strip()]
        return f"py-spy dump --pid {pid} failed: {lines[0] if lines else f'exit {code}'}"
    return None


class PySpy:
    """`py-spy record --pid` for as long as the context is open; the file is written on exit."""

    def __init__(self, pid: int, out: Path, fmt: str, log_path: Path) -> None:
        self._pid = pid
        self.out = out
        self._fmt = fmt
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self.summary = ""

    async def __aenter__(self) -> PySpy:
        binary = py_spy_binary()
        assert binary is not None
        self.out.unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            "record",
            "--pid",
            str(self._pid),
            "--rate",
            str(PY_SPY_RATE),
            "--format",
            self._fmt,
            "--output",
            str(self.out),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self._proc.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                while line := (await self._proc.stdout.readline()).decode(errors="replace"):
                    lines.append(line)
                    if "Sampling process" in line:  # attached: samples are being taken
                        return self
        except TimeoutError:
            pass
        await self._stop()
        raise BenchError(f"py-spy record did not start sampling: {''.join(lines)[-500:]!r}")

    async def _stop(self) -> str:
        if self._proc is None:
            return ""
        proc, self._proc = self._proc, None
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        assert proc.stdout is not None
        try:
            rest = await asyncio.wait_for(proc.stdout.read(), STOP_TIMEOUT_S)
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            rest = b""
        text = rest.decode(errors="replace")
        self._log_path.write_text(text)
        return text

    async def __aexit__(self, *exc_info: object) -> None:
        text = await self._stop()
        wrote = [line.removeprefix("py-spy> ") for line in text.splitlines() if "Wrote" in line]
        self.summary = wrote[-1] if wrote else text.strip()[-300:]
        if not self.out.exists():
            raise BenchError(f"py-spy wrote no {self.out} ({text.strip()[-300:]!r})")


@dataclass(slots=True)
class ProfileResult:
    profiler: str  # "py-spy" or "cProfile"
    output: Path
    run: StreamRun
    objects: int
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        cpu = ms_per_object(self.run.cpu_s.get("service"), self.objects)
        weed = ms_per_object(self.run.cpu_s.get("seaweedfs"), self.objects)
        lines = [
            f"profiler: {self.profiler}",
            f"profile: {self.output}",
            f"profiled stream: {self.run.received / 1e6:.1f} MB in {self.run.total_s:.2f} s "
            f"({self.run.mb_per_s:.1f} MB/s), archive checked ({self.run.members} members); "
            f"service CPU {_f(cpu)} ms/object, SeaweedFS {_f(weed)} ms/object "
            "(slowed down by the profiler: use `python -m bench` for figures)",
            *self.notes,
        ]
        return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def top_functions(path: Path, limit: int = 15) -> str:
    """The `limit` costliest functions of a cProfile file, by own time and by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(limit)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(limit)
    return out.getvalue()


async def profile_stream(
    ep: S3Endpoint,
    ds: Dataset,
    content: Content,
    env: Mapping[str, str],
    *,
    server_pids: Mapping[str, int | None],
    out_dir: Path,
    logs: Path,
    tmp: Path,
    profiler: str = "auto",
    fmt: str = "flamegraph",
    log: Callable[[str], None] = print,
) -> ProfileResult:
    """One cold stream of `ds` with the service profiled (see the module doc); the profile
    goes to `out_dir`, which must exist."""
    if profiler not in PROFILERS or fmt not in PY_SPY_FORMATS:
        raise ValueError(f"profiler {profiler!r}, format {fmt!r}")
    source = f"s3://{ep.bucket}/{ds.prefix}"
    notes: list[str] = []
    if profiler != "cprofile":
        async with (
            ZipedgeServer(ep, source, logs / "zipedge-profile.log", env) as server,
            StreamSession(server.base_url, server.pid, ds, content, tmp, "curl", server_pids) as session,
        ):
            why_not = await py_spy_unavailable(server.pid)
            if why_not is None:
                out = out_dir / f"profile-{ds.name}{SUFFIX[fmt]}"
                log(f"profile: py-spy attached to zipedge pid {server.pid}, streaming {ds.describe()}")
                async with PySpy(server.pid, out, fmt, logs / "py-spy.log") as spy:
                    run = await session.run()
                # Checked after py-spy has let go: an untimed copy, which the profiled run
                # must equal (length and ETag), as for every timed run.
                run.members = (await session.check()).runs[0].members
                notes.append(f"py-spy: {spy.summary}")
                return ProfileResult("py-spy", out, run, ds.count, notes)
        if profiler == "py-spy":
            raise BenchError(f"py-spy cannot profile the service: {why_not}")
        log(f"profile: {why_not}; falling back to cProfile")
        notes.append(f"py-spy could not attach ({why_not}): the service ran under cProfile instead")

    out = out_dir / f"profile-{ds.name}.pstats"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "service"]
    async with (
        ZipedgeServer(ep, source, logs / "zipedge-profile.log", env, command=command) as server,
        StreamSession(server.base_url, server.pid, ds, content, tmp, "curl", server_pids) as session,
    ):
        log(f"profile: zipedge under cProfile (pid {server.pid}), streaming {ds.describe()}")
        run = await session.run_checked()
        # SIGINT, not SIGTERM: uvicorn shuts down, then raises the signal it caught again.
        # SIGTERM's default action would kill the process before cProfile writes its stats;
        # SIGINT's is a KeyboardInterrupt, which unwinds through cProfile's `finally`.
        await server.stop(signal.SIGINT)
    if not out.exists():
        raise BenchError(f"cProfile wrote no {out} (see {logs / 'zipedge-profile.log'})")
    notes += [
        "cProfile covers the whole service process: start-up, the warm-up request and the stream "
        f"(main thread only). Read it with: {sys.executable} -m pstats {out}",
        "",
        top_functions(out),
    ]
    return ProfileResult("cProfile", out, run, ds.count, notes)
