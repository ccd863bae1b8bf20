"""What the local stack's S3 starts with: photos from a date-partitioned folder (the demo
photos, or the folder the caller's ZIPEDGE_SOURCE names) uploaded into the source bucket,
the lifecycle rule of the cache bucket, and the staging bucket's lifecycle and CORS rules.

A folder is read through `FolderSource`, the very source `zipedge serve` uses for it, so
the bucket holds exactly the objects a folder-backed service would serve (hidden files,
symlinks out of the folder and odd names are left out the same way).
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from service.exceptions import ConfigError
from service.settings import Location, S3Settings
from service.sources.folder import FolderSource

#: Headers a browser sends with a presigned upload PUT (Content-Length it sets itself).
UPLOAD_HEADERS = ["content-type", "if-none-match", "x-amz-checksum-crc32"]
#: How long a browser may cache the answer to the CORS preflight (seconds).
CORS_MAX_AGE_S = 3600


UPLOAD_CONCURRENCY = 16
_PART = re.compile("[0-9]+")


@dataclass(frozen=True, slots=True)
class Uploaded:
    objects: int
    days: tuple[date, ...]  #: the days that have at least one object, in order


def source_folder(environ: Mapping[str, str]) -> Path | None:
    """The folder the caller's ZIPEDGE_SOURCE names, or None when it is unset (demo
    photos). A `ConfigError` for an S3 source (the stack brings its own) or a missing folder."""
    raw = environ.get("ZIPEDGE_SOURCE", "").strip()
    if not raw:
        return None
    location = Location.parse("ZIPEDGE_SOURCE", raw)
    if location.scheme != "file":
        raise ConfigError(
            "ZIPEDGE_SOURCE: zipedge stack serves photos from its own S3; set it to a folder "
            "(file:///abs/dir) to upload that folder's photos, or unset it for demo photos"
        )
    if not location.path.is_dir():
        raise ConfigError(f"ZIPEDGE_SOURCE: {location.path} is not a folder")
    return location.path


def photo_days(folder: Path) -> list[date]:
    """Every `YYYY/MM/DD` folder under `folder` that names a calendar day, in order."""
    days: list[date] = []
    for path in folder.glob("*/*/*"):
        parts = path.relative_to(folder).parts
        if not path.is_dir() or not all(_PART.fullmatch(p) for p in parts):
            continue
        if (len(parts[0]), len(parts[1]), len(parts[2])) != (4, 2, 2):
            continue
        try:
            days.append(date(int(parts[0]), int(parts[1]), int(parts[2])))
        except ValueError:
            continue
    return sorted(days)


async def upload_photos(
    s3: S3Settings, folder: Path, days: Iterable[date], *, bucket: str, prefix: str
) -> Uploaded:
    """Put every object of `folder` under the given day prefixes into `bucket` under
    `prefix` (`<prefix>/YYYY/MM/DD/...`, keys as the folder source names them)."""
    from service.s3.client import open_s3_client

    source = FolderSource(folder)
    try:
        wanted = sorted(set(days))
        listings = [await source.list(f"{day:%Y/%m/%d}/") for day in wanted]
    finally:
        await source.aclose()
    keys = [info.key for listing in listings for info in listing]
    async with open_s3_client(s3, max_pool_connections=UPLOAD_CONCURRENCY) as client:
        gate = asyncio.Semaphore(UPLOAD_CONCURRENCY)

        async def upload(key: str) -> None:
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            async with gate:
                body = await asyncio.to_thread((source.root / key).read_bytes)
                await client.put_object(
                    Bucket=bucket, Key=f"{prefix}/{key}", Body=body, ContentType=content_type
                )

        await asyncio.gather(*(upload(key) for key in keys))
    return Uploaded(len(keys), tuple(day for day, listing in zip(wanted, listings, strict=True) if listing))


async def configure_lifecycle(
    s3: S3Settings, *, bucket: str, prefix: str, expire_days: int, abort_multipart_days: int
) -> str:
    """Put the cache bucket's lifecycle rule; say what became of it."""
    from botocore.exceptions import ClientError

    from service.s3.client import open_s3_client

    async with open_s3_client(s3, max_pool_connections=1) as client:
        try:
            await client.put_bucket_lifecycle_configuration(
                Bucket=bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "zipedge-cache",
                            "Status": "Enabled",
                            "Filter": {"Prefix": f"{prefix}/"},
                            "Expiration": {"Days": expire_days},
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_multipart_days},
                        }
                    ]
                },
            )
        except ClientError as exc:  # not every S3 server has lifecycle rules
            return f"not supported by this server ({exc})"
    return (
        f"objects under {prefix}/ expire after {expire_days} days, "
        f"incomplete multipart uploads are aborted after {abort_multipart_days} day"
    )


def cors_rule(origins: list[str]) -> dict[str, object]:
    """The bucket CORS rule a page at `origins` needs to PUT photos with presigned URLs."""
    return {
        "ID": "zipedge-uploads",
        "AllowedOrigins": origins,
        "AllowedMethods": ["PUT"],
        "AllowedHeaders": UPLOAD_HEADERS,
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": CORS_MAX_AGE_S,
    }


def staging_lifecycle_rule(prefix: str, grace_s: int) -> dict[str, object]:
    """The backstop for the janitor: staged bodies under `prefix` expire after the grace
    period (lifecycle rules count whole days: rounded up) and multipart uploads left there
    are aborted."""
    days = max(1, math.ceil(grace_s / 86400))
    return {
        "ID": "zipedge-staging",
        "Status": "Enabled",
        "Filter": {"Prefix": prefix},
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }


async def configure_uploads(
    settings: S3Settings, *, origins: list[str], staging: Location, grace_s: int
) -> str:
    """The staging bucket's lifecycle rule (uploads waiting under `staging` expire after
    `grace_s`) and upload CORS rule; what became of them."""
    from service.s3.client import open_s3_client

    async with open_s3_client(settings, max_pool_connections=1) as client:
        return await _configure_uploads(client, origins, staging, grace_s)


async def _configure_uploads(client: Any, origins: list[str], staging: Location, grace_s: int) -> str:
    from botocore.exceptions import ClientError

    rule = staging_lifecycle_rule(staging.prefix, grace_s)
    done = []
    try:
        await client.put_bucket_lifecycle_configuration(
            Bucket=staging.bucket, LifecycleConfiguration={"Rules": [rule]}
        )
        done.append(f"uploads waiting under {staging.prefix} expire after {rule['Expiration']}")
    except ClientError as exc:
        done.append(f"no staging lifecycle rule ({exc})")
    try:
        await client.put_bucket_cors(
            Bucket=staging.bucket, CORSConfiguration={"CORSRules": [cors_rule(origins)]}
        )
        done.append(f"browsers at {', '.join(origins)} may PUT uploads")
    except ClientError as exc:
        done.append(f"no CORS rule ({exc})")
    return "; ".join(done)
