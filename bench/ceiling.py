"""What fetching the same objects with a Python client costs, without any ZIP.

* python client, no ZIP: raw concurrent GETs with aioboto3 (in the bench process), bodies
  read and thrown away. Informational: botocore spends about a millisecond of CPU per GET,
  several times what the service's own GET path spends, so this is no ceiling (the
  storage limit, bench/storage_limit.py, is).
* sequential baseline: the same GETs one at a time, as a naive zipper does it.

Both use a client whose connection pool was filled by a warm-up pass over other objects, so
connection setup (and botocore's one-time setup) is outside the figures, as it is for the
service, which gets a warm-up request too.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bench.cpu import CpuMeter, ms_per_object
from bench.dataset import Dataset, ObjectSpec
from bench.s3 import S3Client, S3Endpoint, s3_client


@dataclass(slots=True)
class FetchSummary:
    """Runs of one way of fetching a cell's objects without a ZIP, at one concurrency."""

    kind: str  # "storage-limit" | "concurrent" | "sequential"
    concurrency: int  # requests in flight (curl's --parallel-max for the storage limit)
    objects: int
    bytes: int
    client: str = "aioboto3"  # "curl" for the storage limit
    runs_s: list[float] = field(default_factory=list)
    # CPU of the fetching client per run (curl's rusage; this process with aioboto3): what
    # the raw GETs cost, to compare with the service's.
    cpu_s: list[float] = field(default_factory=list)
    cpu_system_s: list[float] = field(default_factory=list)  # its kernel-mode part (curl only)
    # CPU of the storage side per run ({"seaweedfs": s, "proxy": s}, those known).
    server_cpu_s: list[dict[str, float]] = field(default_factory=list)
    # New connections opened per run (curl only).
    connections: list[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.median_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.median_s / 1e6

    @property
    def cpu_ms_per_object(self) -> float | None:
        """The fetching client's CPU per object (median of the runs)."""
        return ms_per_object(statistics.median(self.cpu_s), self.objects) if self.cpu_s else None

    def server_ms_per_object(self, name: str) -> float | None:
        """A storage-side process's CPU per object (median of the runs that have it)."""
        values = [run[name] for run in self.server_cpu_s if name in run]
        return ms_per_object(statistics.median(values), self.objects) if values else None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "client": self.client,
            "concurrency": self.concurrency,
            "objects": self.objects,
            "bytes": self.bytes,
            "runs_s": self.runs_s,
            "cpu_s": self.cpu_s,
            "cpu_system_s": self.cpu_system_s,
            "server_cpu_s": self.server_cpu_s,
            "connections": self.connections,
            "median_s": self.median_s,
            "objects_per_s": self.objects_per_s,
            "mb_per_s": self.mb_per_s,
            "cpu_ms_per_object": self.cpu_ms_per_object,
            "seaweedfs_cpu_ms_per_object": self.server_ms_per_object("seaweedfs"),
            "proxy_cpu_ms_per_object": self.server_ms_per_object("proxy"),
        }


async def _get(s3: S3Client, bucket: str, obj: ObjectSpec) -> int:
    resp = await s3.get_object(Bucket=bucket, Key=obj.key)
    data = await resp["Body"].read()  # a full read hands the connection back to the pool
    if len(data) != obj.size:
        raise RuntimeError(f"{obj.key}: got {len(data)} bytes, expected {obj.size}")
    return len(data)


async def fetch_all(s3: S3Client, bucket: str, objects: Iterable[ObjectSpec], concurrency: int) -> float:
    """GET every object with `concurrency` requests in flight; seconds taken."""
    todo = iter(objects)

    async def worker() -> None:
        for obj in todo:  # shared iterator: a fixed set of workers, not one task per object
            await _get(s3, bucket, obj)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return time.perf_counter() - t0


class Fetcher:
    """A warmed aioboto3 client that GETs the dataset with a fixed concurrency, run by run.

    Kept open across runs so ceiling runs can be interleaved with zipedge streams: on a
    noisy shared machine, figures taken minutes apart are not comparable.
    """

    def __init__(
        self,
        ep: S3Endpoint,
        ds: Dataset,
        concurrency: int,
        server_pids: Mapping[str, int | None] | None = None,
    ) -> None:
        self._ep = ep
        self._ds = ds
        self._concurrency = concurrency
        self._server_pids = dict(server_pids or {})
        self._stack = contextlib.AsyncExitStack()
        self._s3: S3Client | None = None
        kind = "sequential" if concurrency == 1 else "concurrent"
        self.summary = FetchSummary(kind, concurrency, ds.count, ds.total_bytes)

    async def __aenter__(self) -> Fetcher:
        self._s3 = await self._stack.enter_async_context(s3_client(self._ep, pool=self._concurrency))
        # Fills the pool (and runs botocore's one-time setup) on objects outside the range.
        await fetch_all(
            self._s3, self._ep.bucket, self._ds.warmup[: max(2, self._concurrency)], self._concurrency
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def run(self) -> float:
        assert self._s3 is not None
        meter = CpuMeter(self._server_pids)
        meter.start()
        cpu0 = time.process_time()
        seconds = await fetch_all(self._s3, self._ep.bucket, self._ds.objects, self._concurrency)
        self.summary.cpu_s.append(time.process_time() - cpu0)
        self.summary.server_cpu_s.append(meter.stop())
        self.summary.runs_s.append(seconds)
        return seconds
