"""Per-client limits with Redis, two service apps sharing one redis-server: rate limits per
action (uploads too), concurrent live streams, unfinished jobs and stored archives (their
count and their manifests' bytes), each a 429 with an honest Retry-After; clients are
counted apart (by `sub`; by address, through trusted proxies only, without
authentication). And the end of a posted archive: its manifest's TTL."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis

from service.app import create_app
from service.cli import server_limits
from service.stack.redis import RedisServer
from tests.servers import serve
from tests.web.test_api import make_settings, write_files
from tests.web.test_auth import AUDIENCE, SECRET, bearer

pytestmark = pytest.mark.integration

DAY = {"from": "2025-01-02", "to": "2025-01-02"}


@contextlib.contextmanager
def two_services(tmp_path: Path, redis: RedisServer, **env: str) -> Iterator[tuple[str, str]]:
    root = tmp_path / "photos"
    write_files(root)
    settings = dict(
        ZIPEDGE_REDIS_URL=redis.url,
        ZIPEDGE_AUTH_JWT_SECRET=SECRET,
        ZIPEDGE_AUTH_JWT_AUDIENCE=AUDIENCE,
        **env,
    )
    with ExitStack() as stack:
        urls = [
            stack.enter_context(serve(create_app(make_settings(root, tmp_path / f"var{i}", **settings))))
            for i in range(2)
        ]
        yield urls[0], urls[1]


@pytest.fixture
def flushed(redis_server: RedisServer) -> RedisServer:
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server


def assert_limited(response: httpx.Response, most_s: int) -> None:
    assert response.status_code == 429, response.text
    if response.request.method != "HEAD":
        assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= most_s


def test_rate_limits_are_shared_by_every_process(tmp_path: Path, flushed: RedisServer) -> None:
    limits = "download=3/minute,archive=2/minute,job=1/minute,link=2/hour"
    with two_services(tmp_path, flushed, ZIPEDGE_RATE_LIMITS=limits, ZIPEDGE_CACHE="") as (a, b):
        with (
            httpx.Client(headers=bearer("alice"), timeout=30) as alice,
            httpx.Client(headers=bearer("bob")) as bob,
        ):
            assert [alice.head(f"{url}/v1/zip", params=DAY).status_code for url in (a, b, a)] == [200] * 3
            assert_limited(alice.get(f"{b}/v1/zip", params=DAY), 60)
            assert bob.head(f"{b}/v1/zip", params=DAY).status_code == 200  # counted apart

            body = {"entries": [{"key": "2025/01/03/empty.jpg"}]}
            assert [alice.post(f"{u}/v1/archives", json=body).status_code for u in (a, b)] == [201, 201]
            assert_limited(alice.post(f"{a}/v1/archives", json=body), 60)

            assert alice.post(f"{a}/v1/links", json=DAY).status_code == 201
            assert alice.post(f"{b}/v1/links", json=DAY).status_code == 201
            assert_limited(alice.post(f"{a}/v1/links", json=DAY), 3600)

            assert alice.post(f"{a}/v1/jobs", json=DAY).status_code == 202  # queued (no worker runs)
            assert_limited(alice.post(f"{b}/v1/jobs", json=DAY), 60)


def slow_photos(root: Path) -> None:
    for i in range(12):
        path = root / "2025/02/01" / f"big{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1 << 20))


def test_live_streams_per_client_count_across_processes(tmp_path: Path, flushed: RedisServer) -> None:
    slow_photos(tmp_path / "photos")
    day = {"from": "2025-02-01", "to": "2025-02-01"}
    with two_services(
        tmp_path,
        flushed,
        ZIPEDGE_MAX_STREAMS_PER_CLIENT="1",
        ZIPEDGE_CACHE="",
        ZIPEDGE_PREFETCH_BYTES=str(1 << 20),
    ) as (a, b):
        with (
            httpx.Client(headers=bearer("alice"), timeout=30) as alice,
            httpx.Client(headers=bearer("bob")) as bob,
        ):
            with alice.stream("GET", f"{a}/v1/zip", params=day) as first:
                chunks = first.iter_raw()  # held open: the stream is live
                assert first.status_code == 200 and next(chunks)
                assert_limited(alice.get(f"{b}/v1/zip", params=day), 10)
                assert alice.head(f"{b}/v1/zip", params=day).status_code == 200  # HEAD streams nothing
                with bob.stream("GET", f"{b}/v1/zip", params=day) as other:
                    assert other.status_code == 200
            # Alice's stream ended (she left): her slot is free again.
            deadline = time.monotonic() + 10
            while (again := alice.get(f"{b}/v1/zip", params=day)).status_code == 429:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert again.status_code == 200 and len(again.content) == int(again.headers["content-length"])


def test_unfinished_jobs_per_client(tmp_path: Path, flushed: RedisServer) -> None:
    # No worker runs: jobs stay queued, i.e. unfinished.
    with two_services(tmp_path, flushed, ZIPEDGE_MAX_JOBS_PER_CLIENT="2") as (a, b):
        with (
            httpx.Client(headers=bearer("alice"), timeout=30) as alice,
            httpx.Client(headers=bearer("bob")) as bob,
        ):
            first = alice.post(f"{a}/v1/jobs", json={"from": "2025-01-01", "to": "2025-01-01"})
            assert (
                alice.post(f"{b}/v1/jobs", json={"from": "2025-01-02", "to": "2025-01-02"}).status_code == 202
            )
            # The same job again is no new job: fine.
            assert (
                alice.post(f"{b}/v1/jobs", json={"from": "2025-01-01", "to": "2025-01-01"}).json()["id"]
                == (first.json()["id"])
            )
            assert_limited(alice.post(f"{a}/v1/jobs", json={"from": "2025-01-03", "to": "2025-01-03"}), 10)
            assert (
                bob.post(f"{a}/v1/jobs", json={"from": "2025-01-03", "to": "2025-01-03"}).status_code == 202
            )
            assert alice.delete(first.json()["status_url"]).json()["status"] == "cancelled"
            assert (
                alice.post(f"{b}/v1/jobs", json={"from": "2025-01-03", "to": "2025-01-03"}).status_code == 202
            )


def test_stored_archives_per_client(tmp_path: Path, flushed: RedisServer) -> None:
    with two_services(tmp_path, flushed, ZIPEDGE_MAX_ARCHIVES_PER_CLIENT="2", ZIPEDGE_CACHE="") as (a, b):
        with httpx.Client(headers=bearer("alice"), timeout=30) as alice:
            keys = [
                "2025/01/01/MH12AB0000-080015.jpg",
                "2025/01/01/MH12AB0001-080115.jpg",
                "2025/01/03/empty.jpg",
            ]
            bodies = [{"entries": [{"key": key}]} for key in keys]
            assert alice.post(f"{a}/v1/archives", json=bodies[0]).status_code == 201
            assert alice.post(f"{b}/v1/archives", json=bodies[1]).status_code == 201
            assert alice.post(f"{a}/v1/archives", json=bodies[0]).status_code == 201  # already counted
            refused = alice.post(f"{b}/v1/archives", json=bodies[2])
            assert refused.status_code == 429
            # The oldest expires in a week: that is when another one fits.
            assert 6 * 86400 < int(refused.headers["retry-after"]) <= 7 * 86400


def test_without_authentication_clients_are_told_apart_by_address(
    tmp_path: Path, flushed: RedisServer
) -> None:
    root = tmp_path / "photos"
    write_files(root)
    settings = make_settings(
        root, tmp_path / "var", ZIPEDGE_REDIS_URL=flushed.url, ZIPEDGE_RATE_LIMITS="download=1/minute"
    )
    with serve(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        # The test connects from 127.0.0.1, a trusted proxy: X-Forwarded-For names the client.
        assert (
            client.head("/v1/zip", params=DAY, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200
        )
        assert (
            client.head("/v1/zip", params=DAY, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 200
        )
        limited = client.get("/v1/zip", params=DAY, headers={"X-Forwarded-For": "203.0.113.7"})
        assert_limited(limited, 60)
        # A client cannot make itself someone else by prepending hops: the proxy's is used.
        spoofed = client.get("/v1/zip", params=DAY, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
        assert spoofed.status_code == 429


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path, flushed: RedisServer) -> None:
    root = tmp_path / "photos"
    write_files(root)
    settings = make_settings(
        root,
        tmp_path / "var",
        ZIPEDGE_REDIS_URL=flushed.url,
        ZIPEDGE_RATE_LIMITS="download=1/minute",
        ZIPEDGE_TRUSTED_PROXIES="10.0.0.0/8",
    )
    # Served as `zipedge serve` does: uvicorn trusts the same proxies as the service.
    with serve(create_app(settings), **server_limits(settings)) as url, httpx.Client(base_url=url) as client:
        assert (
            client.head("/v1/zip", params=DAY, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200
        )
        # Another made-up address changes nothing: the client is 127.0.0.1 either way.
        assert_limited(client.head("/v1/zip", params=DAY, headers={"X-Forwarded-For": "203.0.113.8"}), 60)


def test_a_limiter_without_redis_counts_in_process(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_files(root)
    settings = make_settings(root, tmp_path / "var", ZIPEDGE_RATE_LIMITS="download=2/minute")
    with serve(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        assert [client.head("/v1/zip", params=DAY).status_code for _ in range(2)] == [200, 200]
        assert_limited(client.head("/v1/zip", params=DAY), 60)


def test_leases_never_let_a_client_past_its_limit(tmp_path: Path, flushed: RedisServer) -> None:
    # 50 a minute: a busy client's hits are taken in batches (at most 5) by each process;
    # together they grant 50 at most, and unused batch hits are the only shortfall.
    with two_services(tmp_path, flushed, ZIPEDGE_RATE_LIMITS="download=50/minute", ZIPEDGE_CACHE="") as (
        a,
        b,
    ):
        granted, refused = 0, set()
        with httpx.Client(headers=bearer("alice"), timeout=30) as alice:
            for i in range(200):
                url = (a, b)[(i // 7) % 2]  # bursts to one process, then the other
                status = alice.head(f"{url}/v1/zip", params=DAY).status_code
                if status == 200:
                    granted += 1
                else:
                    assert status == 429
                    refused.add(url)
                if refused == {a, b}:
                    break
    assert 50 - 2 * 5 <= granted <= 50


def test_uploads_are_rate_limited(tmp_path: Path, flushed: RedisServer) -> None:
    announce = {"filename": "KA01Z9999", "content_type": "image/jpeg", "size": 1000}
    with two_services(tmp_path, flushed, ZIPEDGE_RATE_LIMITS="upload=2/minute") as (a, b):
        with (
            httpx.Client(headers=bearer("alice", "upload"), timeout=30) as alice,
            httpx.Client(headers=bearer("bob", "upload"), timeout=30) as bob,
        ):
            tickets = [alice.post(f"{url}/v1/uploads", json=announce) for url in (a, b)]
            assert [t.status_code for t in tickets] == [201, 201], tickets[0].text
            limited = alice.post(f"{a}/v1/uploads", json=announce)
            assert_limited(limited, 60)
            assert limited.headers["content-type"] == "application/json"
            assert bob.post(f"{b}/v1/uploads", json=announce).status_code == 201  # counted apart
            # Only asking for uploads counts: the ones Alice has are still hers to use.
            assert alice.get(tickets[0].json()["status_url"]).status_code == 200
            assert alice.delete(tickets[1].json()["status_url"]).status_code == 204


def test_stored_archive_bytes_per_client(tmp_path: Path, flushed: RedisServer) -> None:
    keys = [f"2025/01/0{d}/MH12AB{d - 1}{i:03d}-08{i:02d}15.jpg" for d in (1, 2) for i in range(4)]
    quota = 1000  # three one-photo manifests (282 bytes each), not four; nor one of all eight
    with two_services(
        tmp_path, flushed, ZIPEDGE_MAX_ARCHIVE_BYTES_PER_CLIENT=str(quota), ZIPEDGE_MANIFEST_TTL_S="60"
    ) as (a, b):
        with (
            httpx.Client(headers=bearer("alice"), timeout=30) as alice,
            httpx.Client(headers=bearer("bob"), timeout=30) as bob,
        ):
            # One manifest over the whole quota can never fit: 413, not a wait.
            whole = alice.post(f"{a}/v1/archives", json={"entries": [{"key": k} for k in keys]})
            assert whole.status_code == 413 and whole.json()["error"]["code"] == "too_large", whole.text
            accepted, refused = [], None
            for key in keys:  # small ones until their bytes (not their count) fill the quota
                posted = alice.post(
                    f"{(a, b)[len(accepted) % 2]}/v1/archives", json={"entries": [{"key": key}]}
                )
                if posted.status_code != 201:
                    refused = posted
                    break
                accepted.append(posted.json()["id"])
            assert refused is not None and len(accepted) == 3
            # The oldest expires within the manifests' 60 s: that is when another one fits.
            assert_limited(refused, 60)
            books = redis.Redis.from_url(flushed.url)
            (sizes,) = [books.hvals(k) for k in books.scan_iter("zipedge:manifests:sizes:*")]
            assert sum(int(s) for s in sizes) <= quota and len(sizes) == len(accepted)
            assert bob.post(f"{b}/v1/archives", json={"entries": [{"key": keys[0]}]}).status_code == 201
            # Each stored manifest and its owners expire with the TTL.
            for archive_id in accepted:
                for key in (f"zipedge:manifest:{archive_id}", f"zipedge:manifest-owners:{archive_id}"):
                    assert 0 < books.ttl(key) <= 60, key


def test_a_posted_archive_expires_after_its_ttl(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_files(root)
    settings = make_settings(
        root,
        tmp_path / "var",
        ZIPEDGE_AUTH_JWT_SECRET=SECRET,
        ZIPEDGE_AUTH_JWT_AUDIENCE=AUDIENCE,
        ZIPEDGE_MANIFEST_TTL_S="60",
    )
    body = {"entries": [{"key": "2025/01/01/MH12AB0000-080015.jpg"}]}
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, headers=bearer("alice")) as alice:
        doc = alice.post("/v1/archives", json=body).json()
        assert alice.get(doc["url"]).status_code == 200  # served: its layout is remembered too
        # The folder store keeps the last POST as the file's mtime: make it 61 s ago rather
        # than wait a minute.
        (posted,) = (tmp_path / "var" / "manifests").glob(f"??/{doc['id']}.json")
        old = time.time() - 61
        os.utime(posted, (old, old))
        expired = alice.get(doc["url"])
        assert expired.status_code == 404 and expired.json()["error"]["code"] == "unknown_archive"
        # Posting it again makes it downloadable for another TTL.
        assert alice.post("/v1/archives", json=body).json()["id"] == doc["id"]
        assert alice.get(doc["url"]).status_code == 200
