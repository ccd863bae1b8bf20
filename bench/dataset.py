"""The objects the benchmark streams: layout, deterministic content, upload.

Content is incompressible and deterministic: every 16 MiB block of an object is a slice
of one seeded 16 MiB random pool, starting at an offset derived from the key and block
number. That costs nothing to produce (seeded `randbytes` runs at ~100 MB/s here, far
too slow for 3 GB), objects differ from each other, and the expected CRC-32 of every
member can be recomputed at any time to check archives independently of the service.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from typing import Any

from bench.s3 import S3Client

KiB = 1024
MiB = 1024 * KiB

#: One content block; also the multipart part size (S3 allows 5 MiB .. 5 GiB per part).
BLOCK_BYTES = 16 * MiB

#: Bumped when the layout or the content scheme changes, so stored data is re-uploaded.
LAYOUT_VERSION = 1

#: Day of the warm-up objects, outside every measured range.
WARMUP_DAY = date(2024, 12, 31)
WARMUP_COUNT = 32
WARMUP_SIZE = 200 * KiB

FIRST_DAY = date(2025, 1, 1)


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    key: str  # full key in the bucket
    name: str  # key relative to the source root: the member name the service must use
    size: int


@dataclass(frozen=True)
class Dataset:
    name: str
    prefix: str  # source root inside the bucket
    first_day: date
    last_day: date
    objects: tuple[ObjectSpec, ...]
    warmup: tuple[ObjectSpec, ...]

    @property
    def count(self) -> int:
        return len(self.objects)

    @cached_property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def query(self) -> str:
        return f"from={self.first_day.isoformat()}&to={self.last_day.isoformat()}"

    @property
    def warmup_query(self) -> str:
        return f"from={WARMUP_DAY.isoformat()}&to={WARMUP_DAY.isoformat()}"

    def describe(self) -> str:
        sizes = sorted({o.size for o in self.objects})
        size = human_size(sizes[0]) if len(sizes) == 1 else "mixed"
        return f"{self.count} × {size}"


def human_size(n: int) -> str:
    if n % MiB == 0:
        return f"{n // MiB} MiB"
    if n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} B"


def _objects(prefix: str, days: list[date], count: int, size: int, tag: str) -> tuple[ObjectSpec, ...]:
    # Keys mimic the source layout, <root>/YYYY/MM/DD/<file>; names are relative to the root.
    out: list[ObjectSpec] = []
    for i in range(count):
        day = days[i * len(days) // count]  # contiguous, even spread over the days
        name = f"{day:%Y/%m/%d}/{tag}-{i:05d}.bin"
        out.append(ObjectSpec(key=f"{prefix}/{name}", name=name, size=size))
    return tuple(out)


def make_dataset(name: str, count: int, size: int, days: int, prefix: str) -> Dataset:
    day_list = [FIRST_DAY + timedelta(days=d) for d in range(days)]
    return Dataset(
        name=name,
        prefix=prefix,
        first_day=day_list[0],
        last_day=day_list[-1],
        objects=_objects(prefix, day_list, count, size, "obj"),
        warmup=_objects(prefix, [WARMUP_DAY], WARMUP_COUNT, WARMUP_SIZE, "warm"),
    )


def standard_datasets(quick: bool) -> dict[str, Dataset]:
    """small and large are the stream figures; huge is the >= 2 GiB flat-RSS archive;
    cached is the redirect/edge range, jobs the background-job range, load the ranges of
    the load and the soak."""
    # Quick datasets live under their own prefixes: in a reused --data-dir, a full run's
    # objects must never show up in a quick run's listing (or the other way round).
    if quick:
        return {
            "small": make_dataset("small", 200, 200 * KiB, 5, "quick/small"),
            "large": make_dataset("large", 20, 5 * MiB, 1, "quick/large"),
            "huge": make_dataset("huge", 5, 110 * MiB, 1, "quick/huge"),
            "cached": make_dataset("cached", 150, 50 * KiB, 30, "quick/cached"),
            "jobs": make_dataset("jobs", 1000, 200 * KiB, 10, "quick/jobs"),
            "load": make_dataset("load", 208, 200 * KiB, 104, "quick/load"),
        }
    return {
        "small": make_dataset("small", 1000, 200 * KiB, 5, "small"),
        "large": make_dataset("large", 100, 5 * MiB, 1, "large"),
        "huge": make_dataset("huge", 20, 110 * MiB, 1, "huge"),  # 2,306,867,200 B = 2.15 GiB
        # Redirects and the edge: a 30-day range, 20 objects a day; its archive (~31 MB) is
        # also the edge's file.
        "cached": make_dataset("cached", 600, 50 * KiB, 30, "cached"),
        # Jobs: 5,000 × 200 KiB (~1.05 GB) over 10 days; single days are the batch jobs.
        "jobs": make_dataset("jobs", 5000, 200 * KiB, 10, "jobs"),
        # Load and soak: 104 days of 10 x 200 KiB, so 100 streams of 5 days each can all
        # have another range (~10 MB each); the soak picks its ranges from them too.
        "load": make_dataset("load", 1040, 200 * KiB, 104, "load"),
    }


class Content:
    """Deterministic bytes of every object, block by block, without copying the pool."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        pool = random.Random(seed).randbytes(BLOCK_BYTES)
        self._double = memoryview(pool + pool)  # any BLOCK_BYTES window is contiguous
        self._crc: dict[str, int] = {}

    def _offset(self, key: str, block: int) -> int:
        h = hashlib.blake2b(f"{key}#{block}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") % BLOCK_BYTES

    def blocks(self, obj: ObjectSpec) -> Iterator[memoryview]:
        for block, start in enumerate(range(0, obj.size, BLOCK_BYTES)):
            n = min(BLOCK_BYTES, obj.size - start)
            off = self._offset(obj.key, block)
            yield self._double[off : off + n]

    def crc32(self, obj: ObjectSpec) -> int:
        if obj.key not in self._crc:
            crc = 0
            for b in self.blocks(obj):
                crc = zlib.crc32(b, crc)
            self._crc[obj.key] = crc
        return self._crc[obj.key]


def _fingerprint(ds: Dataset, seed: int) -> str:
    spec = {
        "layout": LAYOUT_VERSION,
        "seed": seed,
        "objects": [(o.key, o.size) for o in (*ds.objects, *ds.warmup)],
    }
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()


def _marker_key(ds: Dataset) -> str:
    # Outside the dataset's day prefixes, so the service never lists it.
    return f"bench-markers/{ds.prefix}.json"


async def _already_there(s3: S3Client, bucket: str, ds: Dataset, fingerprint: str) -> bool:
    try:
        resp = await s3.get_object(Bucket=bucket, Key=_marker_key(ds))
        marker = json.loads(await resp["Body"].read())
    except Exception:  # no marker (NoSuchKey) or unreadable: upload again
        return False
    return bool(marker.get("fingerprint") == fingerprint)


async def _put(s3: S3Client, bucket: str, obj: ObjectSpec, content: Content) -> None:
    if obj.size <= BLOCK_BYTES:
        (block,) = content.blocks(obj)
        await s3.put_object(Bucket=bucket, Key=obj.key, Body=bytes(block))
        return
    # Multipart, one part at a time: the uploader holds one 16 MiB part per object, never GBs.
    mpu = await s3.create_multipart_upload(Bucket=bucket, Key=obj.key)
    upload_id = mpu["UploadId"]
    try:
        parts: list[Any] = []
        for number, block in enumerate(content.blocks(obj), start=1):
            resp = await s3.upload_part(
                Bucket=bucket, Key=obj.key, UploadId=upload_id, PartNumber=number, Body=bytes(block)
            )
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=obj.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        await s3.abort_multipart_upload(Bucket=bucket, Key=obj.key, UploadId=upload_id)
        raise


async def upload_dataset(
    s3: S3Client, bucket: str, ds: Dataset, content: Content, concurrency: int = 16
) -> bool:
    """Upload `ds` unless a marker says the same objects are already stored. True if uploaded."""
    fingerprint = _fingerprint(ds, content.seed)
    if await _already_there(s3, bucket, ds, fingerprint):
        return False
    todo = iter((*ds.warmup, *ds.objects))
    big = any(o.size > BLOCK_BYTES for o in ds.objects)
    workers = 4 if big else concurrency  # 4 × 16 MiB parts in flight is plenty for SeaweedFS

    async def worker() -> None:
        for obj in todo:  # a shared iterator: each object is taken by exactly one worker
            await _put(s3, bucket, obj, content)

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())
    marker = json.dumps({"fingerprint": fingerprint, "dataset": ds.name, "count": ds.count}).encode()
    await s3.put_object(Bucket=bucket, Key=_marker_key(ds), Body=marker)
    return True
