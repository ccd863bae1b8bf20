"""`python -m bench.ab REV [REV ...]`: the service's CPU per object at several commits,
side by side, in alternating cold streams (the before/after figure of an optimisation).

Each revision's `service/` is exported with `git archive` into a temp dir (`.` is the work
tree as it is) and one `zipedge serve` per revision is started from it, all on one
SeaweedFS holding the small dataset (1,000 × 200 KiB; `--quick`: 200), no cache, no Redis,
on loopback. After each service's warm-up (and the untimed first stream that teaches the
object index the CRCs), the rounds stream the range from every service in turn, the order
reversed every other round, so that each figure of a round saw the same machine load; the
archives are checked member by member at the end. Printed per revision: every round's
service CPU ms/object (user + system of the service process, as `python -m bench`
measures it) and its median, min and max, the median of its kernel-mode part, and the
median wall time.

A revision may carry settings for its service after `+`: `. .+ZIPEDGE_FETCH_CONCURRENCY=64`
compares a setting against the default. `--delay-ms 10` puts the delay proxy between the
services and SeaweedFS (10 ms each way: the 20 ms RTT of `python -m bench`).

Only `service/` comes from the revision: the bench, the venv and its dependencies are the
work tree's, so a revision that needs another dependency cannot be compared this way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.dataset import Content, standard_datasets, upload_dataset
from bench.s3 import ensure_bucket, s3_client
from bench.stack import ROOT, DelayProxyProcess, ZipedgeServer, seaweedfs
from bench.stream import StreamSession


def parse_rev(spec: str) -> tuple[str, dict[str, str]]:
    """`REV+KEY=VALUE+...` -> (REV, {KEY: VALUE})."""
    rev, *settings = spec.split("+")
    env = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench.ab: {spec!r}: a setting is KEY=VALUE")
        env[key] = value
    return rev, env


def export(rev: str, into: Path) -> Path:
    """`service/` of `rev` under `into` ("." is the work tree itself)."""
    if rev == ".":
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "service"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def command_for(tree: Path) -> list[str]:
    """`zipedge` with `service` imported from `tree` (the work tree is on sys.path too)."""
    code = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); import service; "
        f"assert service.__file__.startswith({str(tree)!r}), service.__file__; "
        "from service.cli import main; sys.argv[0] = 'zipedge'; sys.exit(main())"
    )
    return [sys.executable, "-c", code]


async def run(args: argparse.Namespace) -> int:
    ds = standard_datasets(args.quick)["small"]
    content = Content(args.seed)
    logs = ROOT / "var" / "bench" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[float]] = {rev: [] for rev in args.revs}
    kernel: dict[str, list[float]] = {rev: [] for rev in args.revs}
    walls: dict[str, list[float]] = {rev: [] for rev in args.revs}
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zipedge-ab-")))
        data_dir = args.data_dir or tmp / "seaweedfs"
        ep, weed_pid = stack.enter_context(seaweedfs(data_dir, args.bucket))
        async with s3_client(ep, pool=32) as s3:
            await ensure_bucket(s3, ep.bucket)
            await upload_dataset(s3, ep.bucket, ds, content)
        async with contextlib.AsyncExitStack() as servers:
            storage = ep
            if args.delay_ms:
                proxy = await servers.enter_async_context(
                    DelayProxyProcess(ep, args.delay_ms, logs / "delay_proxy-ab.log")
                )
                storage = ep.via(proxy.url)
            sessions = {}
            for i, spec in enumerate(args.revs):
                rev, env = parse_rev(spec)
                tree = export(rev, tmp / f"rev{i}")
                server = await servers.enter_async_context(
                    ZipedgeServer(
                        storage,
                        f"s3://{ep.bucket}/{ds.prefix}",
                        logs / f"zipedge-ab-{i}.log",
                        {"ZIPEDGE_DATA_DIR": str(tmp / f"var{i}"), **env},
                        command=command_for(tree),
                    )
                )
                sessions[spec] = await servers.enter_async_context(
                    StreamSession(
                        server.base_url, server.pid, ds, content, tmp, "curl", {"seaweedfs": weed_pid}
                    )
                )
            for round_ in range(args.rounds):
                order = args.revs if round_ % 2 == 0 else args.revs[::-1]
                for rev in order:
                    stream = await sessions[rev].run()
                    ms = stream.cpu_s["service"] / ds.count * 1e3
                    figures[rev].append(ms)
                    kernel[rev].append(stream.cpu_system_s.get("service", 0.0) / ds.count * 1e3)
                    walls[rev].append(stream.total_s)
                    print(
                        f"round {round_ + 1} {rev}: {ms:.3f} ms/object, {stream.total_s:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            for rev in args.revs:
                await sessions[rev].check()
    where = f"{2 * args.delay_ms:g} ms RTT" if args.delay_ms else "loopback"
    print(f"service CPU ms/object, {ds.describe()} on {where}, {args.rounds} alternating rounds:")
    for rev in args.revs:
        values = figures[rev]
        print(
            f"  {rev}: median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}; "
            f"{' '.join(f'{v:.3f}' for v in values)}), kernel {statistics.median(kernel[rev]):.3f}; "
            f"wall median {statistics.median(walls[rev]):.2f} s"
        )
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    p.add_argument("revs", nargs="+", help="git revisions to compare; '.' is the work tree as it is")
    p.add_argument("--rounds", type=int, default=6, help="streams per revision (alternating)")
    p.add_argument("--quick", action="store_true", help="200 × 200 KiB instead of 1,000")
    p.add_argument("--data-dir", type=Path, help="keep SeaweedFS data here and reuse it next run")
    p.add_argument("--bucket", default="zipedge-bench")
    p.add_argument("--delay-ms", type=float, default=0.0, help="delay proxy to SeaweedFS, ms each way")
    p.add_argument("--seed", type=int, default=20250101, help="content seed")
    args = p.parse_args(argv)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
