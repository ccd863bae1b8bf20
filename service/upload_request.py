"""What `POST /v1/uploads` accepts, checked field by field (400/413 with the reason), and
the signature of the service's own upload-body URLs. No IO."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.archive.names import UNNAMED, safe_name, validate_key
from service.constants import DOS_EPOCH_YEAR, UPLOAD_EXTENSIONS, UPLOAD_MAX_FUTURE_S
from service.exceptions import InvalidKey, InvalidParameter, TooLarge

_HEX_CRC = re.compile(r"(0x)?[0-9a-fA-F]{1,8}")


@dataclass(frozen=True, slots=True)
class UploadRequest:
    filename: str  #: the file name under its day, after the name policy
    content_type: str
    size: int
    crc32: int | None
    taken_at: float

    def final_key(self, name: str | None = None) -> str:
        day = datetime.fromtimestamp(self.taken_at, UTC)
        return f"{day:%Y/%m/%d}/{name or self.filename}"


def parse_upload_request(body: Any, *, types: tuple[str, ...], max_bytes: int, now: float) -> UploadRequest:
    if not isinstance(body, dict):
        raise InvalidParameter("the body must be a JSON object")
    unknown = sorted(set(body) - {"filename", "content_type", "size", "crc32", "taken_at"})
    if unknown:
        raise InvalidParameter(f"unknown field(s): {', '.join(unknown)}")
    content_type = body.get("content_type")
    if not isinstance(content_type, str) or content_type.strip().lower() not in types:
        raise InvalidParameter(f"'content_type' must be one of {', '.join(types)}")
    content_type = content_type.strip().lower()
    size = body.get("size")
    if type(size) is not int or size <= 0:
        raise InvalidParameter("'size' must be a whole number of bytes above 0")
    if size > max_bytes:
        raise TooLarge(f"'size' is over the upload limit of {max_bytes} bytes")
    return UploadRequest(
        filename=upload_name(body.get("filename"), content_type),
        content_type=content_type,
        size=size,
        crc32=parse_crc32(body.get("crc32")),
        taken_at=parse_taken_at(body.get("taken_at"), now),
    )


def upload_name(raw: Any, content_type: str) -> str:
    """One flat, visible, safe file name: directories dropped, leading dots removed (a
    hidden file would never be listed), the type's extension added when there is none
    (a bare plate number "MH12AB1234" becomes "MH12AB1234.jpg")."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidParameter("'filename' must be a non-empty string")
    name = safe_name(raw).rsplit("/", 1)[-1].lstrip(". ")
    if not name or name == UNNAMED:
        raise InvalidParameter(f"'filename' {raw!r} leaves no usable file name")
    if "." not in name[1:]:
        name += UPLOAD_EXTENSIONS.get(content_type, "")
    try:
        validate_key(f"2000/01/01/{name}")
    except InvalidKey as exc:
        raise InvalidParameter(f"'filename': {exc.message}") from None
    return name


def suffixed(name: str, upload_id: str, length: int) -> str:
    """The name a clash gets: deterministic for one upload, so a retried complete makes
    the same choice (`MH12.jpg` -> `MH12-1f3a9c2e.jpg`)."""
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    return f"{stem}-{upload_id[:length]}{ext}"


def parse_crc32(raw: Any) -> int | None:
    """An integer, or up to 8 hex digits (what `crc32 file` and JS print)."""
    if raw is None:
        return None
    if type(raw) is int and 0 <= raw <= 0xFFFFFFFF:
        return raw
    if isinstance(raw, str) and _HEX_CRC.fullmatch(raw.strip()):
        return int(raw.strip().removeprefix("0x"), 16)
    raise InvalidParameter("'crc32' must be an integer 0..4294967295 or up to 8 hex digits")


def parse_taken_at(raw: Any, now: float) -> float:
    """ISO 8601 (a `Z` or offset; none means UTC); default now. Not before the ZIP epoch
    (1980) and not more than a day ahead (a camera clock drifts, not by days)."""
    if raw is None:
        return now
    if not isinstance(raw, str):
        raise InvalidParameter("'taken_at' must be an ISO 8601 date and time")
    try:
        instant = datetime.fromisoformat(raw.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidParameter(f"'taken_at' {raw!r} is not an ISO 8601 date and time") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    value = instant.timestamp()
    if instant.astimezone(UTC).year < DOS_EPOCH_YEAR:
        raise InvalidParameter(f"'taken_at' is before {DOS_EPOCH_YEAR}")
    if value > now + UPLOAD_MAX_FUTURE_S:
        raise InvalidParameter("'taken_at' is more than a day in the future")
    return value


def body_signature(key: bytes, upload_id: str, expires: int) -> str:
    """The `sig` of `PUT /v1/uploads/{id}/body?expires=...`: HMAC-SHA256 over the id and
    the expiry, base64url without padding."""
    mac = hmac.new(key, f"upload-body\n{upload_id}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def signature_valid(key: bytes, upload_id: str, expires: str, sig: str, now: float) -> bool:
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(body_signature(key, upload_id, int(expires)), sig)
