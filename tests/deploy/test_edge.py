"""The edge (edge/nginx.conf.template) run by Debian's nginx between a client, SeaweedFS
(SigV4 enforced) and the reverse proxy: presigned archive URLs are fetched from the
origin with the Host they were signed for and cached per URL (MISS, then HIT), in
slices, with Range; bad signatures are refused and never cached; API paths are passed
to the reverse proxy uncached."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from service.stack.nginx import Nginx
from service.stack.seaweedfs import SeaweedFS
from tests.servers import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SLICE = 1024 * 1024
#: Several slices and a ragged end, so slicing and reassembly are both exercised.
ARCHIVE = os.urandom(2 * SLICE + 12345)
KEY = "archives/0123456789abcdef0123456789abcdef.zip"


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
        body = b'{"status":"ok"}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
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

    def presign(self, **params: str | int) -> str:
        """A presigned GET of the archive, pointed at the edge instead of the origin."""
        expires = int(params.pop("ExpiresIn", 3600))
        signed: str = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": KEY, **params}, ExpiresIn=expires
        )
        parts = urlsplit(signed)
        return f"{self.url}{parts.path}?{parts.query}"


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
    s3.put_object(
        Bucket=bucket,
        Key=KEY,
        Body=ARCHIVE,
        ContentType="application/zip",
        CacheControl="public, max-age=31536000, immutable",
    )
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
            yield Edge(server.url, bucket, api, s3)
    finally:
        s3.close()


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=30)


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
        assert response.status_code == 403
        assert response.headers["x-cache-status"] == "MISS"  # asked the origin, every time
        assert ARCHIVE[:100] not in response.content
    unsigned = get(good.split("?")[0])
    assert unsigned.status_code == 403


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
    response = httpx.put(f"{edge.url}/{edge.bucket}/{KEY}", content=b"x", timeout=30)
    assert response.status_code == 403
    response = httpx.delete(f"{edge.url}/{edge.bucket}/{KEY}", timeout=30)
    assert response.status_code == 403


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
