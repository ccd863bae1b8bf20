"""`zipedge janitor`: what is left behind, removed.

* Abandoned uploads: pending records older than ZIPEDGE_UPLOAD_GRACE_S, with their staged
  bodies (`Uploads.sweep`; each record is claimed atomically, so janitors on many machines
  never remove one twice).
* Multipart uploads under the cache prefix older than `STALE_MULTIPART_LOCK_TTLS` build
  lock lifetimes: a live build renews its lock every third of one, so these belong to
  builds that were killed before they could abort.

The worker runs it every `JANITOR_INTERVAL_S` (a saq cron job); without Redis the service
runs it itself (`periodic_janitor`). The S3 lifecycle rules set by `zipedge stack` and
docker-compose.yml are the backstop for a deployment that runs neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from service.constants import JANITOR_INTERVAL_S, STALE_MULTIPART_LOCK_TTLS
from service.exceptions import ZipedgeError
from service.runtime import Runtime
from service.s3.errors import TRANSPORT_ERRORS, describe
from service.uploads import Uploads

logger = logging.getLogger(__name__)


async def run_janitor(runtime: Runtime, uploads: Uploads, *, now: datetime | None = None) -> list[str]:
    """One sweep; a line per thing removed (or that could not be)."""
    moment = now or datetime.now(UTC)
    lines: list[str] = []
    try:
        lines += await uploads.sweep(moment.timestamp())
    except ZipedgeError as exc:
        lines.append(f"could not sweep uploads: {exc.message}")
    lines += await abort_stale_multipart(runtime, moment)
    return lines


async def abort_stale_multipart(runtime: Runtime, now: datetime) -> list[str]:
    """Abort incomplete multipart uploads under the cache prefix that no live build owns."""
    cache = runtime.settings.cache
    if cache is None or cache.scheme != "s3" or runtime.s3 is None:
        return []
    client = runtime.s3.client
    cutoff = now - timedelta(seconds=runtime.settings.lock_ttl_s * STALE_MULTIPART_LOCK_TTLS)
    lines: list[str] = []
    try:
        paginator = client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=cache.bucket, Prefix=cache.prefix):
            for upload in page.get("Uploads", []):
                started = upload["Initiated"]
                if started.tzinfo is None:
                    started = started.replace(tzinfo=UTC)
                if started >= cutoff:
                    continue
                key, upload_id = upload["Key"], upload["UploadId"]
                try:
                    await client.abort_multipart_upload(Bucket=cache.bucket, Key=key, UploadId=upload_id)
                    lines.append(
                        f"aborted a stale multipart upload of s3://{cache.bucket}/{key} "
                        f"(started {started:%Y-%m-%dT%H:%M:%SZ})"
                    )
                except ClientError as exc:
                    lines.append(f"could not abort the multipart upload of {key}: {describe(exc)}")
    except (ClientError, BotoCoreError, *TRANSPORT_ERRORS) as exc:
        lines.append(
            f"could not list multipart uploads in s3://{cache.bucket}/{cache.prefix}: {describe(exc)}"
        )
    return lines


@contextlib.asynccontextmanager
async def periodic_janitor(
    runtime: Runtime, uploads: Uploads, *, interval_s: float = JANITOR_INTERVAL_S
) -> AsyncIterator[None]:
    """Run the janitor every `interval_s` while the context is open."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                for line in await run_janitor(runtime, uploads):
                    logger.info("janitor: %s", line)
            except Exception:  # a background loop must not die on one bad round
                logger.exception("janitor round failed")

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
