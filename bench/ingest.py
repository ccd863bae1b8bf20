"""The storage's ingest: how fast it takes an archive's bytes the way a job sends them.

A job reads every member from storage and writes the whole archive back into the cache as
one multipart upload; on a machine whose cores storage shares, that write can cost more
than the read (SeaweedFS spends ~11 ms of CPU per MB it stores). So beside the stream
(the read alone), the jobs part measures the write alone: the same number of bytes, in
parts of the size a cache writer uses (`part_size_for`), `JOB_PARTS_IN_FLIGHT` at once,
through the service's own S3 client settings, from this process, with nothing else
running. No job can be faster than that on this machine; the object is deleted after.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.cpu import CpuMeter
from bench.s3 import S3Endpoint, ensure_bucket


@dataclass(slots=True)
class IngestRun:
    bytes_total: int
    part_bytes: int
    parts_in_flight: int
    seconds: float = 0.0
    client_cpu_s: float = 0.0  # this process, the uploader
    cpu_s: dict[str, float] = field(default_factory=dict)  # the storage side (SeaweedFS)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_total / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def storage_ms_per_mb(self) -> float | None:
        weed = self.cpu_s.get("seaweedfs")
        return weed / self.bytes_total * 1e9 if weed is not None and self.bytes_total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes_total": self.bytes_total,
            "part_bytes": self.part_bytes,
            "parts_in_flight": self.parts_in_flight,
            "seconds": self.seconds,
            "mb_per_s": self.mb_per_s,
            "client_cpu_s": self.client_cpu_s,
            "cpu_s": self.cpu_s,
            "storage_cpu_ms_per_mb": self.storage_ms_per_mb,
        }


async def measure_ingest(
    ep: S3Endpoint, total: int, server_pids: Mapping[str, int | None], *, bucket: str
) -> IngestRun:
    """One multipart upload of `total` bytes into `bucket`, timed from create to complete."""
    from service.cache.s3 import part_size_for
    from service.constants import JOB_PARTS_IN_FLIGHT
    from service.s3.client import open_s3_client
    from service.settings import S3Settings

    part = part_size_for(total)
    run = IngestRun(total, part, JOB_PARTS_IN_FLIGHT)
    block = os.urandom(part)  # incompressible; the same bytes in every part
    settings = S3Settings(ep.endpoint_url, ep.region, ep.access_key, ep.secret_key)
    key = f"ingest-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.bin"
    async with open_s3_client(settings, max_pool_connections=JOB_PARTS_IN_FLIGHT + 2) as client:
        await ensure_bucket(client, bucket)
        meter = CpuMeter(server_pids)
        meter.start()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        created = await client.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = created["UploadId"]
        slots = asyncio.Semaphore(JOB_PARTS_IN_FLIGHT)
        etags: dict[int, str] = {}

        async def put(number: int, size: int) -> None:
            async with slots:
                body = block if size == part else block[:size]
                answer = await client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                etags[number] = answer["ETag"]

        sizes = [min(part, total - offset) for offset in range(0, total, part)]
        try:
            await asyncio.gather(*(put(n, size) for n, size in enumerate(sizes, start=1)))
            await client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
            )
        except BaseException:
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        run.seconds = time.perf_counter() - t0
        run.client_cpu_s = time.process_time() - cpu0
        run.cpu_s = meter.stop()
        await client.delete_object(Bucket=bucket, Key=key)
    return run
