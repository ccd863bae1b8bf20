"""/metrics tells an operator what happened: requests, bytes, streams, cache, jobs."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx

from service.app import create_app
from service.settings import Settings
from tests.servers import serve


def value(text: str, name: str, **labels: str) -> float:
    pattern = re.escape(name)
    if labels:
        pattern += r"\{" + ",".join(f'{k}="{re.escape(v)}"' for k, v in sorted(labels.items())) + r"\}"
    match = re.search(rf"^{pattern} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_follow_streams_and_cache(tmp_path: Path) -> None:
    for i in range(3):
        path = tmp_path / "photos" / f"2025/01/01/{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(10_000))
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
            "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
        }
    )
    params = {"from": "2025-01-01", "to": "2025-01-01"}
    with serve(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        before = client.get("/metrics").text
        streamed = client.get("/v1/zip", params=params)
        client.get("/v1/zip", params={"from": "bad", "to": "2025-01-01"})
        for _ in range(100):  # the cache write settles right after the stream
            if client.get("/v1/zip", params=params).headers.get("x-archive-cache") == "hit":
                break
        # A request is counted once its handler has returned, which can be just after the
        # client has the whole answer: wait for the last one rather than race it.
        for _ in range(100):
            after = client.get("/metrics")
            if (
                value(after.text, "zipedge_requests_total", route="zip_range", method="GET", status="200")
                - value(before, "zipedge_requests_total", route="zip_range", method="GET", status="200")
                >= 2
            ):
                break
            time.sleep(0.02)
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(text, name, **labels) - value(before, name, **labels) >= by

    assert grew("zipedge_requests_total", route="zip_range", method="GET", status="200", by=2)
    assert grew("zipedge_requests_total", route="zip_range", method="GET", status="400")
    assert grew("zipedge_stream_bytes_total", len(streamed.content))
    assert grew("zipedge_stream_outcomes_total", outcome="complete")
    assert grew("zipedge_cache_lookups_total", result="miss")
    assert grew("zipedge_cache_lookups_total", result="hit")
    assert grew("zipedge_cache_writes_total", outcome="committed")
    assert value(text, "zipedge_streams_active") == 0
    assert "zipedge_jobs_queued" in text and "zipedge_source_retries_total" in text
