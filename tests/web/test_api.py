"""The HTTP API on the embedded default (folder source, folder manifests), served by a
real uvicorn: streams, posted archives, every error as JSON, honest failure, disconnects."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.streams import Streams
from tests.servers import serve
from tests.zipcheck import check_archive, descriptor_flags, sha256

DAYS = ["2025/01/01", "2025/01/02", "2025/01/03"]


@dataclass
class Service:
    url: str
    root: Path
    files: dict[str, bytes]
    streams: Streams

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def make_settings(root: Path, data: Path, **env: str) -> Settings:
    return Settings.from_env(
        {"ZIPEDGE_SOURCE": f"file://{root}", "ZIPEDGE_CACHE": "", "ZIPEDGE_DATA_DIR": str(data), **env}
    )


def write_files(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for d, day in enumerate(DAYS):
        for i in range(4):
            key = f"{day}/MH12AB{d}{i:03d}-08{i:02d}15.jpg"
            files[key] = os.urandom(1000 * (i + 1) + d)
    files["2025/01/02/night/KA01Z9999-235959.jpg"] = os.urandom(70_000)
    files["2025/01/03/empty.jpg"] = b""
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (1_736_000_000, 1_736_000_000))
    return files


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    root = tmp_path / "photos"
    files = write_files(root)
    app = create_app(
        make_settings(root, tmp_path / "var", ZIPEDGE_MAX_RANGE_DAYS="31", ZIPEDGE_MAX_ENTRIES="50")
    )
    with serve(app) as url:
        yield Service(url, root, files, app.state.services.streams)


def expected(files: dict[str, bytes], keys: list[str]) -> dict[str, str]:
    return {key: sha256(files[key]) for key in keys}


def test_date_range_streams_a_valid_archive(service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        response = client.get("/v1/zip", params={"from": "2025-01-01", "to": "2025-01-03"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["etag"].strip('"') and response.headers["accept-ranges"] == "bytes"
    assert "filename*=UTF-8''photos-2025-01-01_2025-01-03.zip" in response.headers["content-disposition"]
    path = tmp_path / "range.zip"
    path.write_bytes(response.content)
    check_archive(path, expected(service.files, sorted(service.files)))


def test_range_is_inclusive_and_by_day(service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        response = client.get("/v1/zip", params={"from": "2025-01-02", "to": "2025-01-02"})
    path = tmp_path / "day.zip"
    path.write_bytes(response.content)
    keys = sorted(k for k in service.files if k.startswith("2025/01/02/"))
    check_archive(path, expected(service.files, keys))


def test_head_and_conditional_get(service: Service) -> None:
    params = {"from": "2025-01-01", "to": "2025-01-03"}
    with service.client() as client:
        head = client.head("/v1/zip", params=params)
        assert head.status_code == 200 and head.content == b""
        full = client.get("/v1/zip", params=params)
        assert head.headers["content-length"] == full.headers["content-length"]
        assert head.headers["etag"] == full.headers["etag"]
        again = client.get("/v1/zip", params=params, headers={"If-None-Match": full.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_the_first_stream_learns_every_crc_then_the_bytes_stay_the_same(
    service: Service, tmp_path: Path
) -> None:
    """The first archive of a day has a data descriptor after each member (no CRC was
    known); writing it taught the object index every CRC, so the next one has them all in
    its local headers, opens in streaming readers, and is the same bytes every time after;
    a changed day gives a new id."""
    params = {"from": "2025-01-01", "to": "2025-01-01"}
    with service.client() as client:
        first = client.get("/v1/zip", params=params)
        second = client.get("/v1/zip", params=params)
        third = client.get("/v1/zip", params=params)
        (service.root / DAYS[0] / "new.jpg").write_bytes(b"new photo")
        fourth = client.get("/v1/zip", params=params)
    keys = sorted(k for k in service.files if k.startswith(DAYS[0]))
    paths = []
    for n, response in enumerate((first, second)):
        paths.append(tmp_path / f"{n}.zip")
        paths[-1].write_bytes(response.content)
        check_archive(paths[-1], expected(service.files, keys))
    assert all(descriptor_flags(paths[0])) and not any(descriptor_flags(paths[1]))
    assert second.headers["etag"] != first.headers["etag"]
    assert second.content == third.content and second.headers["etag"] == third.headers["etag"]
    assert fourth.headers["etag"] not in (first.headers["etag"], second.headers["etag"])


def test_posted_archive_with_names_and_duplicates(service: Service, tmp_path: Path) -> None:
    keys = sorted(service.files)[:3]
    body = {
        "name": "gate report",
        "entries": [
            {"key": keys[0], "name": "car.jpg"},
            {"key": keys[1], "name": "CAR.jpg"},
            {"key": keys[2], "name": "../../etc/passwd"},
        ],
    }
    with service.client() as client:
        created = client.post("/v1/archives", json=body)
        assert created.status_code == 201, created.text
        doc = created.json()
        assert doc["entries"] == 3 and doc["filename"] == "gate report.zip"
        assert doc["url"].endswith(f"/v1/archives/{doc['id']}.zip")
        again = client.post("/v1/archives", json=body).json()
        assert again["id"] == doc["id"]  # content-addressed
        response = client.get(doc["url"])
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == doc["size"] == len(response.content)
    assert "gate%20report.zip" in response.headers["content-disposition"]
    path = tmp_path / "posted.zip"
    path.write_bytes(response.content)
    check_archive(
        path,
        {
            "car.jpg": sha256(service.files[keys[0]]),
            "CAR (1).jpg": sha256(service.files[keys[1]]),
            "etc/passwd": sha256(service.files[keys[2]]),
        },
    )


def test_posted_archive_survives_a_restart(service: Service, tmp_path: Path) -> None:
    key = sorted(service.files)[0]
    with service.client() as client:
        doc = client.post("/v1/archives", json={"entries": [{"key": key}]}).json()
    app = create_app(make_settings(service.root, tmp_path / "var"))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get(f"/v1/archives/{doc['id']}.zip")
    assert response.status_code == 200 and len(response.content) == doc["size"]


ERRORS = [
    # (method, path, params or JSON body, status, code)
    ("GET", "/v1/zip", {}, 400, "invalid_parameter"),
    ("GET", "/v1/zip", {"from": "2025-01-01"}, 400, "invalid_parameter"),
    ("GET", "/v1/zip", {"from": "2025-13-01", "to": "2025-01-02"}, 400, "invalid_parameter"),
    ("GET", "/v1/zip", {"from": "2025-1-1", "to": "2025-01-02"}, 400, "invalid_parameter"),
    ("GET", "/v1/zip", {"from": "2025-01-03", "to": "2025-01-01"}, 400, "invalid_parameter"),
    ("GET", "/v1/zip", {"from": "2025-01-01", "to": "2025-03-01"}, 400, "invalid_parameter"),
    ("GET", "/v1/zip", {"from": "2024-01-01", "to": "2024-01-05"}, 404, "nothing_selected"),
    ("HEAD", "/v1/zip", {"from": "2024-01-01", "to": "2024-01-05"}, 404, None),
    ("POST", "/v1/archives", b"{not json", 400, "invalid_parameter"),
    ("POST", "/v1/archives", b"[" * 100_000 + b"]" * 100_000, 400, "invalid_parameter"),  # too deep
    ("POST", "/v1/archives", [], 400, "invalid_parameter"),
    ("POST", "/v1/archives", {"entries": []}, 400, "invalid_parameter"),
    ("POST", "/v1/archives", {"entries": ["2025/01/01/x.jpg"]}, 400, "invalid_parameter"),
    ("POST", "/v1/archives", {"entries": [{"key": "../secret"}]}, 400, "invalid_key"),
    ("POST", "/v1/archives", {"entries": [{"key": "/etc/passwd"}]}, 400, "invalid_key"),
    ("POST", "/v1/archives", {"entries": [{"key": "2025/01/01/a\x00.jpg"}]}, 400, "invalid_key"),
    ("POST", "/v1/archives", {"entries": [{"key": "C:/x.jpg"}]}, 400, "invalid_key"),
    (
        "POST",
        "/v1/archives",
        {"entries": [{"key": "a", "url": "https://x.test/a"}]},
        400,
        "invalid_parameter",
    ),
    ("POST", "/v1/archives", {"entries": [{"url": "https://evil.test/a.jpg"}]}, 400, "host_not_allowed"),
    ("POST", "/v1/archives", {"entries": [{"key": "2025/01/01/missing.jpg"}]}, 404, "object_not_found"),
    ("POST", "/v1/archives", {"entries": [{"key": "2025/01/01/x"}] * 51}, 413, "too_large"),
    ("POST", "/v1/archives", {"name": 5, "entries": [{"key": "2025/01/01/x"}]}, 400, "invalid_parameter"),
    ("GET", "/v1/archives/0123456789abcdef0123456789abcdef.zip", None, 404, "unknown_archive"),
    ("GET", "/v1/archives/not-an-id.zip", None, 404, "unknown_archive"),
    ("GET", "/nowhere", None, 404, "not_found"),
    ("DELETE", "/v1/zip", None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "payload", "status", "code"), ERRORS)
def test_bad_input_gets_a_json_error(
    service: Service, method: str, path: str, payload: object, status: int, code: str | None
) -> None:
    with service.client() as client:
        if method == "POST":
            if isinstance(payload, bytes):
                response = client.post(path, content=payload, headers={"content-type": "application/json"})
            else:
                response = client.post(path, json=payload)
        else:
            response = client.request(method, path, params=payload if isinstance(payload, dict) else None)
    assert response.status_code == status, response.text
    if code is None:  # HEAD: no body
        return
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize("limit", ["ZIPEDGE_MAX_ENTRIES", "ZIPEDGE_MAX_BYTES"])
def test_a_range_over_the_hard_limits_is_413(tmp_path: Path, limit: str) -> None:
    root = tmp_path / "photos"
    write_files(root)
    app = create_app(make_settings(root, tmp_path / "var", **{limit: "3"}))
    with serve(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/v1/zip", params={"from": "2025-01-01", "to": "2025-01-03"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_an_object_that_changes_mid_stream_aborts_the_connection(service: Service) -> None:
    keys = sorted(service.files)
    with service.client() as client:
        doc = client.post("/v1/archives", json={"entries": [{"key": k} for k in keys]}).json()
        (service.root / keys[-3]).write_bytes(b"rewritten after the archive was made")
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", doc["url"]) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += chunk
    assert 0 < len(received) < doc["size"]  # visibly incomplete, never a finished archive


def test_a_client_that_leaves_stops_the_stream(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for i in range(40):
        path = root / "2025/01/01" / f"big{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1 << 20))
    app = create_app(make_settings(root, tmp_path / "var", ZIPEDGE_PREFETCH_BYTES=str(1 << 20)))
    with serve(app) as url:
        streams: Streams = app.state.services.streams
        with (
            httpx.Client(base_url=url) as client,
            client.stream("GET", "/v1/zip", params={"from": "2025-01-01", "to": "2025-01-01"}) as response,
        ):
            # Keep the iterator: a dropped one is closed at once, and httpx then closes the
            # connection, i.e. the client would already have left.
            chunks = response.iter_raw()
            assert next(chunks) and streams.active == 1
        deadline = time.monotonic() + 10
        while streams.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert streams.active == 0


def test_health_and_readiness(service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["source"] == "ok"
    broken = create_app(make_settings(tmp_path / "does-not-exist", tmp_path / "var2"))
    with serve(broken) as url, httpx.Client(base_url=url) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"]
    assert ready.json()["checks"]["source"] != "ok"
