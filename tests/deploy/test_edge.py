"""The edge (edge/nginx.conf.template) run by Debian's nginx between a client, SeaweedFS
(SigV4 enforced) and the reverse proxy: presigned archive URLs are fetched from the
origin with the Host they were signed for and cached per URL (MISS, then HIT), in
slices, with Range; the answers carry the live stream's validators (the archive id as
ETag, the newest member's date as Last-Modified) and no storage internals, and
conditional requests work against them; errors of the edge and of S3 leave as JSON, the
service's own pass untouched; API paths are passed to the reverse proxy uncached."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from service.sigv4 import Credentials, presign_get
from service.stack.nginx import Nginx
from service.stack.seaweedfs import SeaweedFS
from tests.servers import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SLICE = 1024 * 1024
#: Several slices and a ragged end, so slicing and reassembly are both exercised.
ARCHIVE = os.urandom(2 * SLICE + 12345)
#: A cache object without the service's metadata: the edge takes the id from the key.
KEY = "archives/0123456789abcdef0123456789abcdef.zip"
#: One as the service writes them: multipart, with the archive id and the newest
#: member's date as metadata.
META_ID = "fedcba9876543210fedcba9876543210"
META_KEY = f"archives/{META_ID}.zip"
META_DATE = "Wed, 18 Nov 2026 08:30:15 GMT"
META_PARTS = (os.urandom(5 * SLICE), os.urandom(SLICE // 2 + 777))
META_ARCHIVE = b"".join(META_PARTS)
META_DISPOSITION = 'attachment; filename="gate-7.zip"'
IMMUTABLE = "public, max-age=31536000, immutable"
#: Every header an archive answer may carry: what the live stream sends, nothing of S3's.
ARCHIVE_HEADERS = {
    "server",
    "date",
    "connection",
    "content-type",
    "content-length",
    "content-disposition",
    "content-range",
    "accept-ranges",
    "cache-control",
    "etag",
    "last-modified",
    "x-cache-status",
}
#: And every header a JSON error of the edge may carry.
ERROR_HEADERS = {
    "server",
    "date",
    "connection",
    "content-type",
    "content-length",
    "content-range",
    "allow",
    "retry-after",
    "x-cache-status",
}


#: The service's own errors: the edge (and nginx/) must pass them byte for byte.
OWN_ERRORS = {
    "/v1/archives/gone.zip": (
        404,
        b'{"error":{"code":"unknown_archive","message":"the service: no such archive"}}',
    ),
    "/v1/zip": (502, b'{"error":{"code":"source_error","message":"the service: the source failed"}}'),
}


@dataclass
class Api:
    """A stand-in for the service behind the reverse proxy: records what reaches it."""

    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.seen.append((scope["path"], headers))
        status, body = OWN_ERRORS.get(scope["path"], (200, b'{"status":"ok"}'))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"public, max-age=600"),  # must not make the edge cache it
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass
class Edge:
    url: str
    bucket: str
    api: Api
    s3: Any  # a boto3 S3 client signing for the origin
    seaweedfs: SeaweedFS
    access_log: Path

    def presign(self, key: str = KEY, **params: str | int) -> str:
        """A presigned GET of `key`, pointed at the edge instead of the origin. A distinct
        ExpiresIn gives a distinct URL, so a test can start on a cold cache."""
        expires = int(params.pop("ExpiresIn", 3600))
        signed: str = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key, **params}, ExpiresIn=expires
        )
        parts = urlsplit(signed)
        return f"{self.url}{parts.path}?{parts.query}"


def put_as_the_service_does(s3: Any, bucket: str) -> None:
    """META_KEY the way the service writes cache objects: a multipart upload with the
    archive's headers and metadata, committed only if the key does not exist yet."""
    upload = s3.create_multipart_upload(
        Bucket=bucket,
        Key=META_KEY,
        ContentType="application/zip",
        ContentDisposition=META_DISPOSITION,
        CacheControl=IMMUTABLE,
        Metadata={
            "zipedge-size": str(len(META_ARCHIVE)),
            "zipedge-archive-id": META_ID,
            "zipedge-last-modified": META_DATE,
        },
    )
    parts = []
    for number, body in enumerate(META_PARTS, start=1):
        answer = s3.upload_part(
            Bucket=bucket, Key=META_KEY, UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key=META_KEY,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
        IfNoneMatch="*",
    )


@pytest.fixture(scope="module")
def edge(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    bucket = f"cache-{uuid.uuid4().hex[:16]}"
    seaweedfs.create_bucket(bucket)
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweedfs.endpoint_url,
        aws_access_key_id=seaweedfs.access_key,
        aws_secret_access_key=seaweedfs.secret_key,
        region_name=seaweedfs.region,
        # s3v4 explicitly: the default presigner would fall back to SigV2, which SeaweedFS accepts loosely
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    # as the service writes cache objects: immutable bytes, cacheable for a year
    s3.put_object(Bucket=bucket, Key=KEY, Body=ARCHIVE, ContentType="application/zip", CacheControl=IMMUTABLE)
    put_as_the_service_does(s3, bucket)
    api = Api()
    tmp = tmp_path_factory.mktemp("edge")
    try:
        with (
            serve(api) as api_url,
            Nginx(
                "nginx",
                ROOT / "nginx" / "nginx.conf.template",
                tmp / "nginx",
                upstream=api_url.removeprefix("http://"),
            ) as proxy,
            Nginx(
                "edge",
                ROOT / "edge" / "nginx.conf.template",
                tmp / "edge",
                api_upstream=f"127.0.0.1:{proxy.port}",
                origin=f"127.0.0.1:{seaweedfs.s3_port}",
                cache_bucket=bucket,
                slice_size="1m",
                cache_valid="1h",
                cache_max_size="100m",
            ) as server,
        ):
            yield Edge(server.url, bucket, api, s3, seaweedfs, server.access_log_path)
    finally:
        s3.close()


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=30)


def assert_archive_headers(response: httpx.Response) -> None:
    """Only what the live stream sends: no x-amz-*, Seaweed-*, S3 Server or Vary."""
    names = {name.lower() for name in response.headers}
    assert names <= ARCHIVE_HEADERS, f"storage internals leak: {names - ARCHIVE_HEADERS}"
    assert response.headers["server"] == "nginx"
    assert len(response.headers.get_list("x-cache-status")) == 1


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    """An error in the service's shape, and nothing of the archive or of S3 with it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]
    names = {name.lower() for name in response.headers}
    assert names <= ERROR_HEADERS, f"an error carries {names - ERROR_HEADERS}"
    assert len(response.headers.get_list("x-cache-status")) <= 1


def test_presigned_url_is_cached_miss_then_hit(edge: Edge) -> None:
    url = edge.presign()
    assert edge.presign() == url  # same second, same URL: what the service guarantees per window
    first = get(url)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache-status"] == "MISS"
    assert first.content == ARCHIVE
    assert first.headers["content-length"] == str(len(ARCHIVE))
    second = get(url)
    assert second.status_code == 200
    assert second.headers["x-cache-status"] == "HIT"
    assert second.content == ARCHIVE


def test_range_through_the_edge(edge: Edge) -> None:
    url = edge.presign(ExpiresIn=3601, ResponseContentDisposition='attachment; filename="a.zip"')
    # across a slice boundary, on a cold cache: the edge adds its own Range per slice,
    # which the origin accepts because Range is not a signed header
    start, end = SLICE - 10, SLICE + 9
    cold = get(url, Range=f"bytes={start}-{end}")
    assert cold.status_code == 206, cold.text
    assert cold.headers["x-cache-status"] == "MISS"
    assert cold.headers["content-range"] == f"bytes {start}-{end}/{len(ARCHIVE)}"
    assert cold.content == ARCHIVE[start : end + 1]
    assert cold.headers["content-disposition"] == 'attachment; filename="a.zip"'
    # a resumed download: the tail, from cache for the slices already fetched
    warm = get(url, Range=f"bytes={start}-")
    assert warm.status_code == 206
    assert warm.headers["x-cache-status"] == "HIT"
    assert warm.content == ARCHIVE[start:]
    whole = get(url)
    assert whole.status_code == 200 and whole.content == ARCHIVE


def test_head_is_answered_for_a_get_signature(edge: Edge) -> None:
    # A browser or curl -I may HEAD the redirect target; the URL is signed for GET, which
    # the edge sends upstream instead (HEAD at S3 itself would fail the signature).
    response = httpx.head(edge.presign(ExpiresIn=3602), timeout=30)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(ARCHIVE))


def test_bad_signature_is_refused_and_never_cached(edge: Edge) -> None:
    good = edge.presign(ExpiresIn=3603)
    assert get(good).status_code == 200  # the object itself is in the cache now
    query = dict(parse_qsl(urlsplit(good).query))
    query["X-Amz-Signature"] = "0" * 64
    bad = f"{good.split('?')[0]}?{urlencode(query)}"
    for _ in range(2):
        response = get(bad)
        assert_json_error(response, 403, "forbidden")
        assert response.headers["x-cache-status"] == "MISS"  # asked the origin, every time
        assert ARCHIVE[:100] not in response.content
    assert_json_error(get(good.split("?")[0]), 403, "forbidden")  # unsigned


def test_origin_expires_bounds_the_cache(edge: Edge) -> None:
    # A URL signed with response-expires in the past: the origin's Expires header says
    # "stale already", so the edge must not keep it (how a URL's own expiry can bound
    # its cache entry; the object's Cache-Control max-age is ignored on purpose).
    url = edge.presign(ExpiresIn=3604, ResponseExpires=formatdate(0, usegmt=True))
    for _ in range(2):
        response = get(url)
        assert response.status_code == 200
        assert response.headers["x-cache-status"] == "MISS"
        assert response.content == ARCHIVE


def test_origin_cache_control_does_not_decide(edge: Edge) -> None:
    # The edge's TTL, not the object's: `private` would otherwise stop caching, and the
    # object's one-year max-age would outlive the URL's signature.
    url = edge.presign(ExpiresIn=3605, ResponseCacheControl="private, no-store")
    assert get(url).headers["x-cache-status"] == "MISS"
    again = get(url)
    assert again.headers["x-cache-status"] == "HIT"
    assert again.content == ARCHIVE


def test_writes_are_refused(edge: Edge) -> None:
    url = edge.presign()
    for response in (
        httpx.put(url, content=b"x", timeout=30),
        httpx.delete(url, timeout=30),
        httpx.request("FOO", url, timeout=30),
    ):
        assert_json_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET, HEAD"


def test_api_paths_go_to_the_reverse_proxy_uncached(edge: Edge) -> None:
    before = len(edge.api.seen)
    for _ in range(2):
        response = get(f"{edge.url}/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert "x-cache-status" not in response.headers
    other = get(f"{edge.url}/zipedge/photos/a.jpg?X-Amz-Signature=abc")  # not the cache bucket
    assert other.status_code == 200 and "x-cache-status" not in other.headers
    seen = edge.api.seen[before:]
    assert [path for path, _ in seen] == ["/healthz", "/healthz", "/zipedge/photos/a.jpg"]
    # the service sees the Host the browser used (it builds URLs from it) and the chain
    host = urlsplit(edge.url).netloc
    for _, headers in seen:
        assert headers["host"] == host
        assert headers["x-forwarded-host"] == host
        assert headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"


# --- the live stream's validators, no storage internals ------------------------------------


def test_a_cached_archive_looks_like_the_live_stream(edge: Edge) -> None:
    url = edge.presign(META_KEY)
    for expected in ("MISS", "HIT"):
        response = get(url)
        assert response.status_code == 200 and response.content == META_ARCHIVE
        assert response.headers["x-cache-status"] == expected
        # what the service's stream sends for this archive: ETag "<archive id>", the
        # newest member's date; not S3's multipart ETag and write time
        assert response.headers["etag"] == f'"{META_ID}"'
        assert response.headers["last-modified"] == META_DATE
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == META_DISPOSITION
        assert response.headers["content-length"] == str(len(META_ARCHIVE))
        assert response.headers["cache-control"] == IMMUTABLE
        assert response.headers["accept-ranges"] == "bytes"
        assert_archive_headers(response)
    ranged = get(url, Range="bytes=10-19")
    assert ranged.status_code == 206 and ranged.content == META_ARCHIVE[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(META_ARCHIVE)}"
    assert ranged.headers["etag"] == f'"{META_ID}"'
    assert_archive_headers(ranged)
    head = httpx.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["etag"] == f'"{META_ID}"'
    assert_archive_headers(head)
    # what S3 itself sends, for contrast: all of it is hidden
    s3_etag = edge.s3.head_object(Bucket=edge.bucket, Key=META_KEY)["ETag"]
    assert s3_etag != f'"{META_ID}"' and s3_etag.endswith('-2"')


def test_without_metadata_the_id_comes_from_the_key(edge: Edge) -> None:
    response = get(edge.presign(ExpiresIn=3610))
    assert response.status_code == 200 and response.content == ARCHIVE
    assert response.headers["etag"] == '"0123456789abcdef0123456789abcdef"'
    assert response.headers["last-modified"]  # the object's own date, the only one known
    assert_archive_headers(response)


def s3_etag(edge: Edge) -> str:
    etag: str = edge.s3.head_object(Bucket=edge.bucket, Key=META_KEY)["ETag"]
    return etag


def test_if_none_match_and_if_modified_since_against_the_new_validators(edge: Edge) -> None:
    # a cold cache first: the edge fetches the first slice (the origin checks the
    # signature) and answers 304 from it
    url = edge.presign(META_KEY, ExpiresIn=3611)
    etag = f'"{META_ID}"'
    for value in (etag, f'"x", {etag}', f"W/{etag}"):
        response = get(url, **{"If-None-Match": value})
        assert response.status_code == 304, value
        assert response.content == b""
        assert response.headers["etag"] == etag
    assert get(url, **{"If-Modified-Since": META_DATE}).status_code == 304
    # anything else is the archive, S3's own validators included (they are not the edge's)
    for value in ('"0123456789abcdef0123456789abcdef"', s3_etag(edge)):
        response = get(url, **{"If-None-Match": value})
        assert response.status_code == 200 and response.content == META_ARCHIVE
    assert get(url, **{"If-Modified-Since": "Tue, 17 Nov 2026 00:00:00 GMT"}).status_code == 200
    # a tampered signature never gets a 304: the origin is asked and refuses
    query = dict(parse_qsl(urlsplit(url).query))
    query["X-Amz-Signature"] = "0" * 64
    tampered = f"{url.split('?')[0]}?{urlencode(query)}"
    assert_json_error(get(tampered, **{"If-None-Match": etag}), 403, "forbidden")


def test_if_range_against_the_new_validators(edge: Edge) -> None:
    url = edge.presign(META_KEY, ExpiresIn=3612)
    start, end = SLICE - 5, SLICE + 4  # across a slice boundary
    for validator in (f'"{META_ID}"', META_DATE):
        resumed = get(url, Range=f"bytes={start}-{end}", **{"If-Range": validator})
        assert resumed.status_code == 206, validator
        assert resumed.content == META_ARCHIVE[start : end + 1]
        assert resumed.headers["content-range"] == f"bytes {start}-{end}/{len(META_ARCHIVE)}"
    # another archive's id, S3's own ETag, another date: the whole archive, from byte 0
    for validator in ('"0123456789abcdef0123456789abcdef"', s3_etag(edge), "Tue, 17 Nov 2026 00:00:00 GMT"):
        whole = get(url, Range=f"bytes={start}-{end}", **{"If-Range": validator})
        assert whole.status_code == 200, validator
        assert whole.content == META_ARCHIVE
        assert whole.headers["etag"] == f'"{META_ID}"'
        assert_archive_headers(whole)


def test_if_match_another_archive_is_a_json_412(edge: Edge) -> None:
    url = edge.presign(META_KEY, ExpiresIn=3613)
    assert get(url, **{"If-Match": f'"{META_ID}"'}).status_code == 200
    assert_json_error(
        get(url, **{"If-Match": '"0123456789abcdef0123456789abcdef"'}), 412, "precondition_failed"
    )


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_an_unsatisfiable_range_is_a_clean_json_416(edge: Edge, cache: str) -> None:
    url = edge.presign(META_KEY, ExpiresIn=3614 if cache == "cold" else 3615)
    if cache == "warm":
        assert get(url).content == META_ARCHIVE  # every slice cached
    size = len(META_ARCHIVE)
    # past the end but inside the last slice (nginx decides: it has that slice), and past
    # every slice (the origin decides)
    for first in (size, size + 10, size + 20 * SLICE):
        response = get(url, Range=f"bytes={first}-")
        assert_json_error(response, 416, "range_not_satisfiable")
        assert response.headers["content-range"] == f"bytes */{size}"
        assert response.headers["x-cache-status"] in ("MISS", "HIT")
    # and the archive is still served whole and in ranges afterwards
    assert get(url, Range=f"bytes={size - 1}-").content == META_ARCHIVE[-1:]


# --- errors: JSON in the service's shape ---------------------------------------------------


def test_storage_errors_are_json(edge: Edge) -> None:
    credentials = Credentials(edge.seaweedfs.access_key, edge.seaweedfs.secret_key)

    def signed(key: str, now: float) -> str:
        return presign_get(
            origin=edge.seaweedfs.endpoint_url,
            bucket=edge.bucket,
            key=key,
            credentials=credentials,
            region=edge.seaweedfs.region,
            window_s=60,
            min_validity_s=60,
            public_url=edge.url,
            now=now,
        )

    assert get(signed(META_KEY, time.time())).status_code == 200  # as the service signs
    # signed two hours ago for two minutes: expired (S3's 403, as XML, becomes JSON)
    expired = get(signed(META_KEY, time.time() - 7200))
    assert_json_error(expired, 403, "forbidden")
    assert expired.headers["x-cache-status"] == "MISS"
    # validly signed, but no such object (expired from the bucket): S3's 404
    missing = get(signed("archives/00000000000000000000000000000000.zip", time.time()))
    assert_json_error(missing, 404, "not_found")
    # the edge's own internal pages are not reachable from outside
    assert_json_error(get(f"{edge.url}/_zipedge/error/500"), 404, "not_found")


def test_oversized_requests_are_json(edge: Edge) -> None:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{content_type}",
            f"{edge.url}/v1/zip?q={'a' * 100_000}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    assert status == "414 application/json" and '"uri_too_long"' in body
    assert_json_error(get(edge.presign(), **{"X-Big": "b" * 9000}), 431, "headers_too_large")


def test_the_services_own_errors_pass_untouched(edge: Edge) -> None:
    for path, (status, body) in OWN_ERRORS.items():
        response = get(f"{edge.url}{path}")
        assert response.status_code == status and response.content == body
        assert "x-cache-status" not in response.headers


def test_every_request_is_logged_once(edge: Edge) -> None:
    # Range requests pass through the relay, which must not log them a second time
    url = edge.presign(META_KEY, ExpiresIn=3616)
    assert get(url, Range="bytes=0-0").status_code == 206
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    deadline = time.monotonic() + 10  # nginx logs a request once it is over: a moment after
    while not (lines := [line for line in edge.access_log.read_text().splitlines() if signature in line]):
        assert time.monotonic() < deadline, "the request was never logged"
        time.sleep(0.05)
    time.sleep(0.2)  # a second line, if the relay logged it too, would be there by now
    lines = [line for line in edge.access_log.read_text().splitlines() if signature in line]
    assert len(lines) == 1 and " 206 " in lines[0] and "cache=MISS" in lines[0]


# --- real curl: resuming a download -------------------------------------------------------


def test_curl_resumes_through_the_edge(edge: Edge, tmp_path: Path) -> None:
    url = edge.presign(META_KEY, ExpiresIn=3617)
    target = tmp_path / "gate-7.zip"
    target.write_bytes(META_ARCHIVE[: 3 * SLICE + 99])  # an interrupted download

    def curl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["curl", "-sS", "-o", str(target), "-w", "%{http_code}", *args, url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    resumed = curl("-C", "-")
    assert (resumed.returncode, resumed.stdout) == (0, "206")
    assert target.read_bytes() == META_ARCHIVE
    # resuming a complete file: the edge's 416 tells curl there is nothing left, and
    # the file is left alone (no error body appended)
    again = curl("-C", "-")
    assert (again.returncode, again.stdout) == (0, "416")
    assert target.read_bytes() == META_ARCHIVE
    # "only if newer than my copy", dated as the archive's Last-Modified: the edge's 304
    # (as sent: curl reports 304 for its own time check too)
    stamp = parsedate_to_datetime(META_DATE).timestamp()
    os.utime(target, (stamp, stamp))
    sent = tmp_path / "headers"
    conditional = curl("-z", str(target), "-D", str(sent))
    assert (conditional.returncode, conditional.stdout) == (0, "304")
    assert sent.read_text().startswith("HTTP/1.1 304 ")
    assert target.read_bytes() == META_ARCHIVE


# --- upstreams down ------------------------------------------------------------------------


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port held by a socket that never listens: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            sock.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    held.append(sock.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield sock.getsockname()[1]
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()


def broken_edge(data_dir: Path, *, origin: int, api: int) -> Nginx:
    return Nginx(
        "edge",
        ROOT / "edge" / "nginx.conf.template",
        data_dir,
        api_upstream=f"127.0.0.1:{api}",
        origin=f"127.0.0.1:{origin}",
        cache_bucket="zipedge-cache",
        slice_size="1m",
        cache_valid="1h",
        cache_max_size="100m",
        origin_timeout="1s",
    )


ARCHIVE_PATH = f"/zipedge-cache/{KEY}?X-Amz-Signature=abc"


def test_unreachable_upstreams_are_json_502s(tmp_path: Path) -> None:
    with refusing_port() as port, broken_edge(tmp_path, origin=port, api=port) as server:
        archive = get(f"{server.url}{ARCHIVE_PATH}")
        assert_json_error(archive, 502, "bad_gateway")
        assert archive.headers["x-cache-status"] == "MISS"
        for path in ("/healthz", "/v1/zip?from=2025-01-01&to=2025-01-02"):
            api = get(f"{server.url}{path}")
            assert_json_error(api, 502, "bad_gateway")
            assert "x-cache-status" not in api.headers


def test_a_silent_origin_is_a_json_504(tmp_path: Path) -> None:
    with (
        silent_port() as origin,
        refusing_port() as api,
        broken_edge(tmp_path, origin=origin, api=api) as server,
    ):
        for headers in ({}, {"Range": "bytes=0-9"}):
            response = get(f"{server.url}{ARCHIVE_PATH}", **headers)
            assert_json_error(response, 504, "gateway_timeout")
