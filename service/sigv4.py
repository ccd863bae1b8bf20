"""AWS Signature Version 4 for S3: stable presigned URLs, and signed GET headers.

Pure: hashing and string building only.

*Presigned URLs* (query-string auth) for cached archives:

botocore signs with the current second, so every redirect would be a new URL and a new
CDN cache entry. Here the signing time is floored to a window (default one hour) and the
expiry is the window plus a minimum validity: every request in a window gets the
byte-identical URL, which the edge can cache, and every URL stays valid for at least the
minimum validity after it was handed out.

The URL's host may be the edge's (`public_url`) while the signature is computed for the
origin's host: the edge forwards with the origin's Host header, so S3 verifies it.

*Signed headers* for the fetcher's object GETs and listings: botocore spends about 2 ms of
CPU per request (event hooks, parsing, signing); signing one here costs a few
microseconds (the signing key is kept per day and region); on a 2-core machine that is
the difference between CPU-bound and network-bound streaming.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from service.constants import PRESIGNED_URL_MEMO

#: SigV4 caps presigned URLs at seven days (seconds).
MAX_EXPIRES_S = 7 * 24 * 3600

_UNRESERVED = "-_.~"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


#: a path of unreserved characters and slashes is its own canonical form
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~/-]*\Z").match


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode("utf-8"), "sha256")


def _encode(value: str) -> str:
    return quote(value, safe=_UNRESERVED)


# The key depends only on the secret, the day and the region: four HMACs saved per signed
# request (a stream of 1,000 photos signs 1,000 GETs).
@functools.lru_cache(maxsize=16)
def _signing_key(secret_key: str, day: str, region: str) -> bytes:
    key_date = _hmac(f"AWS4{secret_key}".encode(), day)
    return _hmac(_hmac(_hmac(key_date, region), "s3"), "aws4_request")


@functools.lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))


def canonical_path(path: str) -> str:
    if _PLAIN_PATH(path):
        return path
    return "/".join(_encode(segment) for segment in path.split("/"))


def canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))


def sign_get_headers(
    *,
    host: str,
    path: str,
    credentials: Credentials,
    region: str,
    query: dict[str, str] | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """Authorization headers for `GET path?query` at `host` (payload unsigned, as S3
    allows). Headers not signed here (Range, If-Match) may be added freely; the request
    must send the query exactly as `canonical_query` encodes it."""
    stamp = _stamp(int(time.time() if now is None else now))
    day = stamp[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    token = credentials.session_token
    # The signed headers in sorted order, written out: host, x-amz-content-sha256,
    # x-amz-date, x-amz-security-token.
    if token:
        signed = "host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
        canonical_headers = (
            f"host:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{stamp}\n"
            f"x-amz-security-token:{token}\n"
        )
    else:
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical_headers = f"host:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{stamp}\n"
    encoded_query = canonical_query(query) if query else ""
    canonical_request = (
        f"GET\n{canonical_path(path)}\n{encoded_query}\n{canonical_headers}\n{signed}\nUNSIGNED-PAYLOAD"
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    signature = hmac.digest(
        _signing_key(credentials.secret_key, day, region), string_to_sign.encode(), "sha256"
    ).hex()
    headers = {"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": stamp}
    if token:
        headers["x-amz-security-token"] = token
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return headers


def window_start(now: float, window_s: int) -> int:
    """The start of the signing window that contains `now` (seconds since the epoch)."""
    return int(now // window_s) * window_s


def expiry_for(window_s: int, min_validity_s: int) -> int:
    return min(window_s + min_validity_s, MAX_EXPIRES_S)


def presign_get(
    *,
    origin: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    region: str,
    window_s: int,
    min_validity_s: int,
    public_url: str = "",
    path_style: bool = True,
    response_headers: dict[str, str] | None = None,
    now: float | None = None,
    method: str = "GET",
) -> str:
    """A presigned GET of `bucket/key` at `origin` ("http://127.0.0.1:8333" or
    "https://s3.eu-west-1.amazonaws.com"), stable within the window containing `now`.
    `method="HEAD"` presigns a HEAD instead: SigV4 signs the method, and S3 refuses a HEAD
    on a URL signed for GET.

    `response_headers` become `response-content-disposition` and friends, which S3 sets on
    its answer; they are signed, so they cannot be altered by the client.
    """
    if window_s <= 0 or min_validity_s < 0:
        raise ValueError("window must be positive and minimum validity not negative")
    return _presign_at(
        window_start(time.time() if now is None else now, window_s),
        origin,
        bucket,
        key,
        credentials,
        region,
        expiry_for(window_s, min_validity_s),
        public_url,
        path_style,
        tuple(sorted((response_headers or {}).items())),
        method,
    )


# A URL is the same for a whole window, and a redirect hands out the same few again and
# again: remembering them saves the HMAC chain and the encoding (~40 µs a redirect).
@functools.lru_cache(maxsize=PRESIGNED_URL_MEMO)
def _presign_at(
    signed_at: int,
    origin: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    region: str,
    expires_s: int,
    public_url: str,
    path_style: bool,
    response_headers: tuple[tuple[str, str], ...],
    method: str,
) -> str:
    return _presigned_url(
        method,
        origin,
        bucket,
        key,
        credentials,
        region,
        expires_s,
        signed_at,
        signed_headers={},
        extra_query=response_headers,
        public_url=public_url,
        path_style=path_style,
    )


def _presigned_url(
    method: str,
    origin: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    region: str,
    expires_s: int,
    signed_at: float,
    *,
    signed_headers: dict[str, str],
    extra_query: tuple[tuple[str, str], ...] = (),
    public_url: str = "",
    path_style: bool = True,
) -> str:
    """A query-string-signed URL for `method` on `bucket/key`: `host` and `signed_headers`
    (which the client must then send as they are) in X-Amz-SignedHeaders, the payload
    unsigned, `extra_query` (e.g. response-content-disposition) signed into the query."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at))
    day = stamp[:8]
    scope = f"{day}/{region}/s3/aws4_request"
    parts = urlsplit(origin)
    host = parts.netloc
    if path_style:
        path = f"/{bucket}/{key}"
    else:
        host = f"{bucket}.{host}"
        path = f"/{key}"
    path = canonical_path(path)

    values = {"host": host, **{name.lower(): value.strip() for name, value in signed_headers.items()}}
    names = sorted(values)
    signed = ";".join(names)
    query = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{credentials.access_key}/{scope}",
        "X-Amz-Date": stamp,
        "X-Amz-Expires": str(expires_s),
        "X-Amz-SignedHeaders": signed,
    }
    if credentials.session_token:
        query["X-Amz-Security-Token"] = credentials.session_token
    query.update(extra_query)
    encoded_query = canonical_query(query)

    canonical_headers = "".join(f"{name}:{values[name]}\n" for name in names)
    canonical_request = "\n".join(
        [method, path, encoded_query, canonical_headers, signed, "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    signing_key = _signing_key(credentials.secret_key, day, region)
    signature = hmac.new(signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    base = public_url.rstrip("/") if public_url else f"{parts.scheme}://{host}"
    return f"{base}{path}?{encoded_query}&X-Amz-Signature={signature}"


# --- presigned uploads ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PresignedPut:
    """A presigned PUT: the URL and exactly the headers the client must send with it
    (every one of them is signed, so a different value fails the signature)."""

    url: str
    headers: dict[str, str]


def crc32_header(crc32: int) -> str:
    """The `x-amz-checksum-crc32` value of a CRC-32: base64 of its four big-endian bytes."""
    if not 0 <= crc32 <= 0xFFFFFFFF:
        raise ValueError(f"not a CRC-32: {crc32}")
    return base64.b64encode(crc32.to_bytes(4, "big")).decode("ascii")


def put_headers(*, size: int, content_type: str, crc32: int | None) -> dict[str, str]:
    """What an upload's PUT must carry: its length, its type, its CRC-32 when declared,
    and `If-None-Match: *` (the key must not exist yet)."""
    sent = {"Content-Length": str(size), "Content-Type": content_type, "If-None-Match": "*"}
    if crc32 is not None:
        sent["x-amz-checksum-crc32"] = crc32_header(crc32)
    return sent


def presign_put(
    *,
    origin: str,
    bucket: str,
    key: str,
    credentials: Credentials,
    region: str,
    expires_s: int,
    size: int,
    content_type: str,
    crc32: int | None = None,
    path_style: bool = True,
    now: float | None = None,
) -> PresignedPut:
    """A presigned `PUT` of `bucket/key` at `origin`, valid `expires_s` from `now`, bound
    to the body's length, its type, its CRC-32 (when given) and `If-None-Match: *` (the
    key must not exist yet): all of them are in `X-Amz-SignedHeaders`. The URL is signed
    for the host it names, so the client must reach storage under exactly that name."""
    if not 0 < expires_s <= MAX_EXPIRES_S:
        raise ValueError(f"expiry must be within 1..{MAX_EXPIRES_S} s")
    if size < 0:
        raise ValueError("size must not be negative")
    sent = put_headers(size=size, content_type=content_type, crc32=crc32)
    signed_at = time.time() if now is None else now
    url = _presigned_url(
        "PUT",
        origin,
        bucket,
        key,
        credentials,
        region,
        expires_s,
        signed_at,
        signed_headers=sent,
        path_style=path_style,
    )
    return PresignedPut(url=url, headers=sent)
