"""Names and bytes of cached day listings: which day a prefix or key is, the Redis keys,
whether a day is settled, and the blob codec. No IO."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from service.constants import LISTING_LATE_UPLOAD_MARGIN_S, LISTING_ZLIB_LEVEL
from service.sources.base import ObjectInfo

logger = logging.getLogger(__name__)

#: Redis key prefix; the blob key carries a format number so that a change of the blob
#: layout never misreads blobs written by older processes during a rolling deploy.
KEY_PREFIX: Final = "zipedge:listing:"
BLOB_FORMAT: Final = 1

#: Set once per Redis dataset (no TTL) and part of every cache token: see
#: `DayVersions.claim_epoch`.
EPOCH_KEY: Final = KEY_PREFIX + "epoch"

#: The cache token of a day while Redis is unreachable.
OFFLINE: Final = "offline"

_DAY_PREFIX = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})/")


def parse_day_prefix(prefix: str) -> date | None:
    """The day of a `YYYY/MM/DD/` prefix, or None for any other prefix (not cached)."""
    match = _DAY_PREFIX.fullmatch(prefix)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def day_of_key(key: str) -> date | None:
    """The day partition of an object key (`2025/01/05/x.jpg` -> 2025-01-05), for writers
    that must `bump` the day they wrote to; None if the key is not under a day."""
    return parse_day_prefix(key[:11]) if len(key) > 11 else None


@functools.lru_cache(maxsize=64)
def source_hash(source_id: str) -> str:
    """Short stable id of a source for Redis keys (hides URLs, keeps keys short)."""
    return hashlib.sha256(source_id.encode()).hexdigest()[:16]


def version_key(source_id: str, day: date) -> str:
    return f"{KEY_PREFIX}v:{source_hash(source_id)}:{day.isoformat()}"


def generation_key(source_id: str) -> str:
    """Counts every bump of any day of the source: an unchanged generation means every
    day version read before it is still current (see `_KnownVersions`)."""
    return f"{KEY_PREFIX}g:{source_hash(source_id)}"


def listing_key(source_id: str, day: date, token: str) -> str:
    """Redis key of a day's blob; `token` is `<epoch>.<version>` (see `DayListingCache`)."""
    return f"{KEY_PREFIX}d{BLOB_FORMAT}:{source_hash(source_id)}:{day.isoformat()}:{token}"


def is_settled(day: date, now: datetime) -> bool:
    """True once `day` ended (UTC) more than the late-upload margin before `now`."""
    try:
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        return now >= end + timedelta(seconds=LISTING_LATE_UPLOAD_MARGIN_S)
    except OverflowError:  # date.max
        return False


def encode_listing(objects: Sequence[ObjectInfo], expires: datetime) -> bytes:
    """`[expiry epoch seconds, [[key, size, etag, mtime, crc32|null], ...]]`, zlib'd."""
    rows = [[o.key, o.size, o.etag, o.mtime, o.crc32] for o in objects]
    text = json.dumps([expires.timestamp(), rows], separators=(",", ":"), ensure_ascii=False)
    return zlib.compress(text.encode(), LISTING_ZLIB_LEVEL)


def decode_listing(blob: bytes, prefix: str) -> tuple[datetime, tuple[ObjectInfo, ...]]:
    """The expiry and objects of a blob; `ValueError` if it is not one we wrote for `prefix`.
    Checked field by field: a wrong size or ETag here would end up in an archive."""
    try:
        document = json.loads(zlib.decompress(blob))
    except zlib.error as exc:
        raise ValueError(f"not a listing blob: {exc}") from None
    if not (isinstance(document, list) and len(document) == 2 and isinstance(document[1], list)):
        raise ValueError("not a listing blob")
    expiry, rows = document
    if type(expiry) not in (int, float):
        raise ValueError("bad expiry")
    objects: list[ObjectInfo] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 5):
            raise ValueError("bad row")
        key, size, etag, mtime, crc32 = row
        if not (
            type(key) is str
            and key.startswith(prefix)
            and type(size) is int
            and size >= 0
            and type(etag) is str
            and type(mtime) is int
            and (crc32 is None or (type(crc32) is int and 0 <= crc32 <= 0xFFFFFFFF))
        ):
            raise ValueError(f"bad row {row!r}")
        objects.append(ObjectInfo(key, size, etag, mtime, crc32))
    return datetime.fromtimestamp(expiry, UTC), tuple(objects)


@functools.lru_cache(maxsize=1024)  # ranges repeat: parse each once
def day_prefixes(prefixes: tuple[str, ...]) -> tuple[tuple[int, str, date], ...]:
    """(index, prefix, day) of the prefixes that name a day."""
    found = ((index, prefix, parse_day_prefix(prefix)) for index, prefix in enumerate(prefixes))
    return tuple((index, prefix, day) for index, prefix, day in found if day is not None)


def version_token(epoch: str, value: Any) -> str:
    """A day's cache token: `<epoch>.<version>`, version 0 when never bumped; OFFLINE when
    the version is unreadable (then nothing is kept long)."""
    if value is None:
        return f"{epoch}.0"
    try:
        version = int(value)
    except (TypeError, ValueError):
        logger.warning("ignoring a bad listing version %r", value)
        return OFFLINE
    return f"{epoch}.{version}" if version >= 0 else OFFLINE


def refresh_key(source_id: str, day: date, token: str) -> str:
    """Redis key of a settled day's re-validation claim (SET NX): one LIST of that day per
    interval across every process (see `service/listing/refresh.py`)."""
    return f"{KEY_PREFIX}r:{source_hash(source_id)}:{day.isoformat()}:{token}"


def bumps_channel(source_id: str) -> str:
    """Redis pub/sub channel on which `bump_day` announces a bumped day of the source."""
    return f"{KEY_PREFIX}bumps:{source_hash(source_id)}"
