"""Jobs on the embedded default (in-process runner, folder cache): over the streaming
limits a selection becomes a job with progress, events, cancel, and a cached download."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.servers import serve
from tests.zipcheck import check_archive, sha256

BIG = {"from": "2025-01-01", "to": "2025-01-03"}
SMALL = {"from": "2025-01-01", "to": "2025-01-01"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    files = {f"2025/01/0{1 + i // 4}/CAR{i:03d}.jpg": os.urandom(30_000 + i) for i in range(12)}
    for key, data in files.items():
        (tmp_path / "photos" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / key).write_bytes(data)
    return files


@pytest.fixture
def url(tmp_path: Path, files: dict[str, bytes]) -> Iterator[str]:
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
            "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "ZIPEDGE_STREAM_MAX_ENTRIES": "5",
        }
    )
    with serve(create_app(settings)) as base:
        yield base


def wait_ready(client: httpx.Client, status_url: str) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while True:
        job: dict[str, object] = client.get(status_url).json()
        if job["status"] in ("ready", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_over_the_limit_becomes_a_job_then_a_cached_download(
    url: str, files: dict[str, bytes], tmp_path: Path
) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v1/zip", params=SMALL).status_code == 200  # under the limit: streams
        accepted = client.get("/v1/zip", params=BIG)
        assert accepted.status_code == 202
        job = accepted.json()
        assert job["id"] and job["status"] in ("queued", "running", "ready")
        assert job["entries_total"] == 12 and job["bytes_total"] > 12 * 30_000
        assert accepted.headers["location"] == job["status_url"]
        again = client.post("/v1/jobs", json=BIG)
        assert again.status_code == 202 and again.json()["id"] == job["id"]  # one job per archive
        done = wait_ready(client, job["status_url"])
        assert done["status"] == "ready" and done["progress"] == 1.0
        assert done["bytes_done"] == done["bytes_total"] and done["entries_done"] == 12
        archive = client.get(str(done["download_url"]))
        assert archive.status_code == 200
        cached = client.get("/v1/zip", params=BIG)  # now cached: served from the cache folder
        assert cached.status_code == 200 and cached.headers["x-archive-cache"] == "hit"
        assert cached.content == archive.content
        listed = client.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]
    path = tmp_path / "job.zip"
    path.write_bytes(archive.content)
    check_archive(path, {k: sha256(files[k]) for k in sorted(files)})


def test_a_head_over_the_limit_starts_nothing(url: str) -> None:
    """HEAD is safe (RFC 9110): it says a GET would become a job, and where that job would
    be, without submitting it."""
    with httpx.Client(base_url=url, timeout=30) as client:
        head = client.head("/v1/zip", params=BIG)
        assert head.status_code == 202 and head.content == b""
        assert client.get("/v1/jobs").json()["jobs"] == []
        assert client.get(head.headers["location"]).status_code == 404  # nothing there yet
        job = client.get("/v1/zip", params=BIG).json()
        assert job["status_url"] == head.headers["location"]  # the GET's job is that one


def test_browsers_are_sent_to_the_job_page(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        response = client.get("/v1/zip", params=BIG, headers={"Accept": "text/html,*/*"})
    assert response.status_code == 303 and response.headers["location"].startswith("/?job=")


def test_events_end_with_ready_and_ids_grow(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        job = client.post("/v1/jobs", json=BIG).json()
        events: list[tuple[str, str, dict[str, object]]] = []
        with client.stream("GET", job["events_url"]) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            kind = ident = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("id:"):
                    ident = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((kind, ident, json.loads(line.split(":", 1)[1])))
                    if kind != "progress":
                        break
        assert events[-1][0] == "ready" and events[-1][2]["download_url"]
        assert all(kind == "progress" for kind, _, _ in events[:-1])
        # Reconnecting with the last id gets the final state again, nothing older.
        last_id = events[-1][1]
        with client.stream("GET", job["events_url"], headers={"Last-Event-ID": last_id}) as response:
            lines = [line for line in response.iter_lines() if line.startswith("event:")]
        assert lines == ["event: ready"]


def test_cancel_and_unknown_jobs(url: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        job = client.post("/v1/jobs", json=BIG).json()
        answer = client.delete(job["status_url"])
        if answer.status_code == 409:  # the build committed first and says so
            assert answer.json()["error"]["code"] == "job_ready"
            assert client.get(job["status_url"]).json()["status"] == "ready"
        else:
            assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
            assert not list((tmp_path / "cache").glob("[!.]*.zip"))
        assert not list((tmp_path / "cache").glob(".partial-*"))
        missing = client.get("/v1/jobs/0123456789abcdef0123456789abcdef")
        bad = client.get("/v1/jobs/nope")
        invalid = client.post("/v1/jobs", json={"from": "2025-02-01", "to": "2025-01-01"})
        unknown_archive = client.post("/v1/jobs", json={"archive": "0123456789abcdef0123456789abcdef"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_job"
    assert bad.status_code == 404
    assert invalid.status_code == 400
    assert unknown_archive.status_code == 404
