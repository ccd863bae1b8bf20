"""`GET /v1/days` on the embedded default (folder source) under a real uvicorn: every day
of the range with its object count and bytes, the totals, and the archive `/v1/zip`
would send (same id, same exact size), or why there is none; errors as JSON."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.servers import serve

FILES = {
    "2025/01/01/MH12AB0001-080000.jpg": 1_000,
    "2025/01/01/MH12AB0002-090000.jpg": 2_000,
    "2025/01/03/KA01Z0003-100000.jpg": 3_000,
    "2025/01/03/night/KA01Z0004-235959.jpg": 4_000,  # deeper folders count, as in archives
    "2025/01/03/.partial.jpg": 5_000,  # hidden: never part of a selection
    "2025/01/04/empty.jpg": 0,
}


def serve_days(tmp_path: Path, **env: str) -> Iterator[str]:
    root = tmp_path / "photos"
    for key, size in FILES.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(os.urandom(size))
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{root}",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "ZIPEDGE_MAX_RANGE_DAYS": "31",
            **env,
        }
    )
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    yield from serve_days(tmp_path)


def days(url: str, start: str, end: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/days", params={"from": start, "to": end}, timeout=30)


def test_every_day_of_the_range_with_its_objects_and_bytes(site: str) -> None:
    response = days(site, "2024-12-31", "2025-01-04")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["from"] == "2024-12-31" and body["to"] == "2025-01-04"
    # Days without objects are listed too, with 0: the range is complete and in order.
    assert body["days"] == [
        {"day": "2024-12-31", "objects": 0, "bytes": 0},
        {"day": "2025-01-01", "objects": 2, "bytes": 3_000},
        {"day": "2025-01-02", "objects": 0, "bytes": 0},
        {"day": "2025-01-03", "objects": 2, "bytes": 7_000},
        {"day": "2025-01-04", "objects": 1, "bytes": 0},
    ]
    assert (body["objects"], body["bytes"]) == (5, 10_000)


def test_the_archive_is_the_one_the_download_sends(site: str) -> None:
    body = days(site, "2025-01-01", "2025-01-04").json()
    head = httpx.head(f"{site}/v1/zip", params={"from": "2025-01-01", "to": "2025-01-04"})
    archive = body["archive"]
    assert archive["size"] == int(head.headers["content-length"])
    assert f'"{archive["id"]}"' == head.headers["etag"]
    assert archive["entries"] == int(head.headers["x-archive-entries"]) == body["objects"]
    assert archive["filename"] == "photos-2025-01-01_2025-01-04.zip"
    assert archive["job"] is False
    assert "no_archive" not in body


def test_a_range_without_objects_says_so(site: str) -> None:
    response = days(site, "2024-06-01", "2024-06-03")
    assert response.status_code == 200
    body = response.json()
    assert [d["objects"] for d in body["days"]] == [0, 0, 0]
    assert body["archive"] is None
    assert body["no_archive"]["code"] == "nothing_selected"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2025-01-01", "2025-03-01", "at most 31 days"),  # ZIPEDGE_MAX_RANGE_DAYS
        ("2025-01-05", "2025-01-01", "is after"),
        ("2025-1-1", "2025-01-05", "YYYY-MM-DD"),
        (None, "2025-01-05", "required"),
    ],
)
def test_bad_ranges_are_400_json(site: str, start: str | None, end: str, message: str) -> None:
    params = {k: v for k, v in {"from": start, "to": end}.items() if v is not None}
    response = httpx.get(f"{site}/v1/days", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_parameter" and message in error["message"]


def test_over_the_hard_limits_the_days_are_listed_without_an_archive(tmp_path: Path) -> None:
    for url in serve_days(tmp_path, ZIPEDGE_MAX_ENTRIES="3"):
        body = days(url, "2025-01-01", "2025-01-04").json()
        assert body["objects"] == 5
        assert body["archive"] is None
        assert body["no_archive"]["code"] == "too_large"  # the download would be a 413


def test_over_the_streaming_limits(tmp_path: Path) -> None:
    for url in serve_days(tmp_path, ZIPEDGE_STREAM_MAX_BYTES="5000", ZIPEDGE_STREAM_MAX_ENTRIES="4"):
        small = days(url, "2025-01-03", "2025-01-04").json()["archive"]
        assert small["entries"] == 3 and small["job"] is True  # 7,000 bytes: a job
        many = days(url, "2025-01-01", "2025-01-04").json()
        assert many["archive"] is None and many["no_archive"]["code"] == "not_laid_out"
        assert many["objects"] == 5 and many["bytes"] == 10_000
