"""Stable presigned URLs: identical within a window, new in the next, never past 7 days."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from service.sigv4 import MAX_EXPIRES_S, Credentials, presign_get

CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
BASE = dict(
    origin="http://127.0.0.1:8333",
    bucket="cache",
    key="archives/abc.zip",
    credentials=CREDS,
    region="us-east-1",
    window_s=3600,
    min_validity_s=3600,
)


def url(now: float, **kw: object) -> str:
    return presign_get(**(BASE | kw), now=now)  # type: ignore[arg-type]


def test_identical_within_a_window_and_new_after_it() -> None:
    start = 1_736_000_000 - 1_736_000_000 % 3600
    assert url(start) == url(start + 1) == url(start + 3599)
    assert url(start + 3600) != url(start)


def test_expiry_covers_the_window_plus_the_minimum_validity() -> None:
    query = parse_qs(urlsplit(url(1_736_000_000)).query)
    assert query["X-Amz-Expires"] == ["7200"]
    assert query["X-Amz-Date"] == ["20250104T140000Z"]
    assert query["X-Amz-SignedHeaders"] == ["host"]
    long = parse_qs(urlsplit(url(0, window_s=6 * 86400, min_validity_s=5 * 86400)).query)
    assert int(long["X-Amz-Expires"][0]) == MAX_EXPIRES_S


def test_public_host_keeps_the_origin_signature() -> None:
    origin = url(1_736_000_000)
    public = url(1_736_000_000, public_url="https://cdn.example.test")
    assert public.startswith("https://cdn.example.test/cache/archives/abc.zip?")
    assert urlsplit(public).query == urlsplit(origin).query


def test_response_headers_are_signed_and_encoded() -> None:
    plain = url(0)
    named = url(0, response_headers={"response-content-disposition": "attachment; filename*=UTF-8''ü.zip"})
    assert "response-content-disposition=attachment%3B%20filename%2A%3DUTF-8%27%27%C3%BC.zip" in named
    assert (
        parse_qs(urlsplit(named).query)["X-Amz-Signature"]
        != parse_qs(urlsplit(plain).query)["X-Amz-Signature"]
    )


def test_known_signature_vector() -> None:
    """Checked against botocore's own SigV4 query signer for the same instant."""

    ours = url(1_736_000_000)
    request = AWSRequest(method="GET", url="http://127.0.0.1:8333/cache/archives/abc.zip")
    signer = S3SigV4QueryAuth(
        BotoCredentials(CREDS.access_key, CREDS.secret_key), "s3", "us-east-1", expires=7200
    )
    fixed = datetime.datetime(2025, 1, 4, 14, 0, 0)
    with botocore_clock(fixed):
        signer.add_auth(request)
    theirs = parse_qs(urlsplit(request.url).query)
    assert parse_qs(urlsplit(ours).query)["X-Amz-Signature"] == theirs["X-Amz-Signature"]


def test_bad_window_is_refused() -> None:
    with pytest.raises(ValueError):
        url(0, window_s=0)


def test_presigned_put_matches_botocore_with_the_bound_headers() -> None:
    """The upload URL signs Content-Length, Content-Type, If-None-Match and the CRC header;
    checked against botocore's query signer given the same headers and instant."""
    from service.sigv4 import crc32_header, presign_put

    ours = presign_put(
        origin="http://127.0.0.1:8333",
        bucket="photos",
        key="gate7/_staging/abc",
        credentials=CREDS,
        region="us-east-1",
        expires_s=900,
        size=1234,
        content_type="image/jpeg",
        crc32=0xDEADBEEF,
        now=1_736_000_000,
    )
    assert ours.headers == {
        "Content-Length": "1234",
        "Content-Type": "image/jpeg",
        "If-None-Match": "*",
        "x-amz-checksum-crc32": crc32_header(0xDEADBEEF),
    }
    assert crc32_header(0xDEADBEEF) == "3q2+7w=="
    query = parse_qs(urlsplit(ours.url).query)
    assert query["X-Amz-SignedHeaders"] == [
        "content-length;content-type;host;if-none-match;x-amz-checksum-crc32"
    ]
    request = AWSRequest(
        method="PUT", url="http://127.0.0.1:8333/photos/gate7/_staging/abc", headers=dict(ours.headers)
    )
    signer = S3SigV4QueryAuth(
        BotoCredentials(CREDS.access_key, CREDS.secret_key), "s3", "us-east-1", expires=900
    )
    fixed = datetime.datetime(2025, 1, 4, 14, 13, 20)
    with botocore_clock(fixed):
        signer.add_auth(request)
    theirs = parse_qs(urlsplit(request.url).query)
    assert theirs["X-Amz-SignedHeaders"] == query["X-Amz-SignedHeaders"]
    assert query["X-Amz-Signature"] == theirs["X-Amz-Signature"]


@contextlib.contextmanager
def botocore_clock(fixed: datetime.datetime) -> Iterator[None]:
    """botocore's signing clock stopped at `fixed`: `get_current_datetime` in recent
    releases, `datetime.datetime.utcnow` inside botocore.auth in older ones."""
    import botocore.auth

    if hasattr(botocore.auth, "get_current_datetime"):
        with mock.patch("botocore.auth.get_current_datetime", return_value=fixed):
            yield
        return

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:  # type: ignore[override]
            return fixed

    with mock.patch.object(botocore.auth.datetime, "datetime", Frozen):
        yield


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//session+token="])
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/photos/2025/01/04/IMG_0001.jpg", None),
        ("/photos/2025/01/04/a b+ü%.jpg", None),
        ("/photos", {"list-type": "2", "prefix": "2025/01/04/", "continuation-token": "a+b/c="}),
    ],
)
def test_signed_get_headers_match_botocore(
    token: str | None, path: str, query: dict[str, str] | None
) -> None:
    """The GET headers the data plane signs (signing key kept per day, canonical request
    written out) are botocore's, for plain and encoded paths, a query and a session token."""
    from urllib.parse import quote

    from botocore.auth import S3SigV4Auth

    from service.sigv4 import canonical_path, canonical_query, sign_get_headers

    creds = Credentials(CREDS.access_key, CREDS.secret_key, token)
    for _ in range(2):  # the second signature comes from the kept key and stamp
        ours = sign_get_headers(
            host="127.0.0.1:8333",
            path=path,
            credentials=creds,
            region="eu-west-1",
            query=query,
            now=1_736_000_000,
        )
    assert canonical_path(path) == "/".join(quote(s, safe="-_.~") for s in path.split("/"))
    url = f"http://127.0.0.1:8333{canonical_path(path)}" + (f"?{canonical_query(query)}" if query else "")
    request = AWSRequest(method="GET", url=url, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    signer = S3SigV4Auth(BotoCredentials(creds.access_key, creds.secret_key, token), "s3", "eu-west-1")
    fixed = datetime.datetime(2025, 1, 4, 14, 13, 20)
    with (
        botocore_clock(fixed),
        mock.patch.object(S3SigV4Auth, "_should_sha256_sign_payload", return_value=False),
    ):
        signer.add_auth(request)
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"] == "20250104T141320Z"
    assert ours["authorization"] == request.headers["Authorization"]
    assert ours.get("x-amz-security-token") == token
