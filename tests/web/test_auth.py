"""Identity over a real uvicorn: bearer tokens (none, bad signature, expired, wrong
audience, missing scope), signed links (valid, tampered, expired, other subject), owners
of jobs, posted archives and uploads (another client: 404, listings filtered, admin sees all), what
stays open, and everything open when no authentication is configured."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest

from service.app import create_app
from service.links import LinkSigner
from tests.servers import serve
from tests.web.test_api import make_settings, write_files

SECRET = "a-test-secret-that-is-long-enough-32"
AUDIENCE = "zipedge-tests"
RANGE = {"from": "2025-01-01", "to": "2025-01-03"}


def bearer(sub: str = "alice", scope: str = "download", **claims: Any) -> dict[str, str]:
    payload = {"sub": sub, "scope": scope, "aud": AUDIENCE, "exp": int(time.time()) + 600, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, claims.pop('key', SECRET), algorithm='HS256')}"}


@dataclass
class Service:
    url: str
    files: dict[str, bytes]

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    root = tmp_path / "photos"
    files = write_files(root)
    settings = make_settings(
        root,
        tmp_path / "var",
        ZIPEDGE_AUTH_JWT_SECRET=SECRET,
        ZIPEDGE_AUTH_JWT_AUDIENCE=AUDIENCE,
        ZIPEDGE_CACHE=f"file://{tmp_path / 'cache'}",
        # Anything over one day becomes a job, so jobs are quick to make.
        ZIPEDGE_STREAM_MAX_ENTRIES="6",
    )
    with serve(create_app(settings)) as url:
        yield Service(url, files)


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json", response.text
    code: str = response.json()["error"]["code"]
    return code


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (dict, "bearer token"),
        (lambda: {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "Bearer"),
        (lambda: bearer(key="another-secret-that-is-long-enough!"), "does not verify"),
        (lambda: bearer(exp=int(time.time()) - 600), "expired"),
        (lambda: bearer(aud="someone-else"), "aud"),
        (lambda: {"Authorization": "Bearer not.a.jwt"}, "does not verify"),
    ],
)
def test_no_or_bad_token_is_401_with_a_challenge(
    service: Service, headers: Callable[[], dict[str, str]], why: str
) -> None:
    # Tokens made when the test runs: made at collection, a valid one could expire first.
    with service.client(headers()) as client:
        for method, path in [
            ("GET", "/v1/zip"),
            ("GET", "/v1/jobs"),
            ("POST", "/v1/archives"),
            ("GET", "/metrics"),
        ]:
            response = client.request(method, path, params=RANGE if path == "/v1/zip" else None)
            assert response.status_code == 401, (path, response.text)
            assert error_of(response) == "unauthorized" and why in response.json()["error"]["message"]
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_token_without_the_scope_is_403(service: Service) -> None:
    with service.client(bearer(scope="upload")) as client:
        response = client.get("/v1/zip", params=RANGE)
        assert response.status_code == 403 and error_of(response) == "forbidden"
        assert "'download'" in response.json()["error"]["message"]
    with service.client(bearer(scope="download")) as client:
        assert client.get("/metrics").status_code == 403
        assert client.get("/v1/zip", params={"from": "2025-01-02", "to": "2025-01-02"}).status_code == 200
    with service.client(bearer(sub="ops", scope="admin")) as client:
        assert client.get("/metrics").status_code == 200


def test_the_page_and_probes_stay_open(service: Service) -> None:
    with service.client() as client:
        for path in ["/", "/static/app.js", "/healthz", "/readyz"]:
            assert client.get(path).status_code == 200, path
        assert client.get("/nowhere").status_code == 404  # not under /v1/: no identity needed


def test_a_signed_link_opens_with_no_header(service: Service) -> None:
    day = {"from": "2025-01-02", "to": "2025-01-02"}
    with service.client(bearer()) as client:
        created = client.post("/v1/links", json=day)
        again = client.post("/v1/links", json=day)
    assert created.status_code == 201, created.text
    doc = created.json()
    assert doc["url"] == again.json()["url"]  # one link per window
    assert doc["expires_at"].endswith("Z")
    query = dict(parse_qsl(urlsplit(doc["url"]).query))
    assert query["sub"] == "alice" and query["from"] == query["to"] == "2025-01-02"
    with service.client() as anonymous:
        head = anonymous.head(doc["url"])
        response = anonymous.get(doc["url"])
    assert head.status_code == response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content) > 0


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("to=2025-01-02", "to=2025-01-03"),
        lambda url: url.replace("sub=alice", "sub=bob"),
        lambda url: url.replace("expires=", "expires=9"),
        lambda url: url[:-2] + ("AA" if not url.endswith("AA") else "BB"),
    ],
)
def test_a_tampered_link_is_403(service: Service, tamper: Any) -> None:
    with service.client(bearer()) as client:
        url = client.post("/v1/links", json={"from": "2025-01-02", "to": "2025-01-02"}).json()["url"]
    with service.client() as anonymous:
        response = anonymous.get(tamper(url))
    assert response.status_code == 403 and error_of(response) == "forbidden"


def test_an_expired_link_is_403(service: Service) -> None:
    old = LinkSigner(SECRET, ttl_s=3600).sign(
        "/v1/zip", [("from", "2025-01-02"), ("to", "2025-01-02")], "alice", now=time.time() - 3 * 3600
    )
    with service.client() as anonymous:
        response = anonymous.get(f"/v1/zip?{old.query}")
    assert response.status_code == 403 and "expired" in response.json()["error"]["message"]


def test_a_link_opens_downloads_only(service: Service) -> None:
    with service.client(bearer()) as client:
        url = client.post("/v1/links", json={"from": "2025-01-02", "to": "2025-01-02"}).json()["url"]
    query = urlsplit(url).query
    with service.client() as anonymous:
        assert anonymous.get(f"/v1/jobs?{query}").status_code == 403  # signed for /v1/zip only
        assert anonymous.post(f"/v1/zip?{query}").status_code == 401  # links are for GET and HEAD


def test_posted_archives_belong_to_whoever_posted_them(service: Service) -> None:
    body = {"entries": [{"key": k} for k in sorted(service.files)[:2]]}
    with service.client(bearer("alice")) as alice, service.client(bearer("bob")) as bob:
        doc = alice.post("/v1/archives", json=body).json()
        assert alice.get(doc["url"]).status_code == 200
        # Bob guesses (or computes: ids are content hashes) the id: 404 as for any unknown id.
        for response in (
            bob.get(doc["url"]),
            bob.head(doc["url"]),
            bob.post("/v1/jobs", json={"archive": doc["id"]}),
            bob.post("/v1/links", json={"archive": doc["id"]}),
        ):
            assert response.status_code == 404, response.text
        # Bob posting the same entries makes it his too.
        assert bob.post("/v1/archives", json=body).json()["id"] == doc["id"]
        assert bob.get(doc["url"]).status_code == 200
        link = alice.post("/v1/links", json={"archive": doc["id"]}).json()["url"]
    with service.client(bearer("ops", "admin download")) as admin:
        assert admin.get(doc["url"]).status_code == 200
    with service.client() as anonymous:
        assert anonymous.get(link).status_code == 200


def test_jobs_belong_to_whoever_asked(service: Service) -> None:
    with service.client(bearer("alice")) as alice, service.client(bearer("bob")) as bob:
        job = alice.post("/v1/jobs", json=RANGE)
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        assert job.json()["owner"] == "alice"
        for response in (
            bob.get(f"/v1/jobs/{job_id}"),
            bob.get(f"/v1/jobs/{job_id}/events"),
            bob.delete(f"/v1/jobs/{job_id}"),
        ):
            assert response.status_code == 404 and error_of(response) == "unknown_job"
        assert [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]] == []
        # Bob's own job for the same range is another job (it waits for the same build).
        bobs = bob.post("/v1/jobs", json=RANGE).json()
        assert bobs["id"] != job_id
        assert [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]] == [job_id]
        assert alice.get(f"/v1/jobs/{job_id}").status_code == 200
    with service.client(bearer("ops", "admin download")) as admin:
        assert {j["id"] for j in admin.get("/v1/jobs").json()["jobs"]} == {job_id, bobs["id"]}
        assert admin.get(f"/v1/jobs/{job_id}").status_code == 200


def test_uploads_belong_to_whoever_asked(service: Service) -> None:
    photo = b"\xff\xd8" + bytes(998)
    announce = {"filename": "KA01Z9999", "content_type": "image/jpeg", "size": len(photo)}
    with (
        service.client(bearer("alice", "upload")) as alice,
        service.client(bearer("bob", "upload")) as bob,
    ):
        ticket = alice.post("/v1/uploads", json=announce).json()
        assert ticket["status"] == "pending"
        # Bob knows the id (or guessed it): as for an id that does not exist, never a 403.
        for response in (
            bob.get(ticket["status_url"]),
            bob.post(ticket["complete_url"]),
            bob.delete(ticket["status_url"]),
        ):
            assert response.status_code == 404 and error_of(response) == "unknown_upload", response.text
        # Word for word what an unknown id gets: the answer tells nothing about Alice's.
        other = "0" * len(ticket["id"])
        unknown = bob.get(ticket["status_url"].replace(ticket["id"], other))
        theirs = bob.get(ticket["status_url"]).json()["error"]["message"]
        assert unknown.status_code == 404 and unknown.json()["error"]["message"] == theirs.replace(
            ticket["id"], other
        )
        # Bob's DELETE removed nothing: Alice's upload goes on.
        assert alice.get(ticket["status_url"]).json()["status"] == "pending"
        assert alice.put(ticket["url"], content=photo, headers=ticket["headers"]).status_code == 200
    with service.client(bearer("ops", "admin upload")) as admin:
        seen = admin.get(ticket["status_url"])
        assert seen.status_code == 200 and seen.json()["id"] == ticket["id"]
    with service.client(bearer("alice", "upload")) as alice:
        done = alice.post(ticket["complete_url"])
        assert done.status_code == 200 and done.json()["key"].endswith("/KA01Z9999.jpg"), done.text


def test_a_job_download_from_the_cache_folder_is_signed(service: Service) -> None:
    with service.client(bearer("alice")) as alice:
        job = alice.post("/v1/jobs", json=RANGE).json()
        deadline = time.monotonic() + 30
        while job["status"] != "ready" and time.monotonic() < deadline:
            time.sleep(0.1)
            job = alice.get(job["status_url"]).json()
        assert job["status"] == "ready", job
        # The range is cached now: the service answers from its cache folder itself.
        cached = alice.get("/v1/zip", params=RANGE)
    assert cached.status_code == 200 and cached.headers["x-archive-cache"] == "hit"
    assert "sig=" in job["download_url"] and "/v1/cache/" in job["download_url"]
    with service.client() as anonymous:
        assert anonymous.get(job["download_url"]).status_code == 200  # a browser, no header
        unsigned = job["download_url"].split("&sub=")[0]
        assert anonymous.get(unsigned).status_code == 401


def test_without_authentication_everything_is_open(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_files(root)
    with (
        serve(create_app(make_settings(root, tmp_path / "var"))) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert client.get("/v1/zip", params={"from": "2025-01-02", "to": "2025-01-02"}).status_code == 200
        assert client.get("/metrics").status_code == 200
        link = client.post("/v1/links", json={"from": "2025-01-02", "to": "2025-01-02"})
        assert link.status_code == 201 and link.json()["expires_at"] is None
        assert link.json()["url"].endswith("/v1/zip?from=2025-01-02&to=2025-01-02")
        assert client.get(link.json()["url"]).status_code == 200
