"""The page's upload panel in Debian's headless Chromium against SeaweedFS: the browser
computes each CRC-32, asks for a URL, PUTs the bytes straight to storage (the service's
own request log shows no body through it) and completes; the photos are in the next
archive of their day. With folder storage the same panel PUTs to the service itself."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from service.app import create_app
from service.s3.client import open_s3_client
from service.settings import Settings
from service.stack.seaweedfs import SeaweedFS
from tests.e2e.test_page import SCREENSHOTS, browser, open_tab  # noqa: F401 (fixture)
from tests.s3_fixtures import s3_settings
from tests.servers import serve

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TAKEN = datetime(2025, 1, 5, 8, 30, tzinfo=UTC)


class BodyLog:
    """ASGI wrapper: how many body bytes the service received, per request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, int]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = [scope["method"], scope["path"], 0]
        self.requests.append(entry)  # type: ignore[arg-type]

        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                entry[2] += len(message.get("body", b""))  # type: ignore[operator]
            return message

        await self.app(scope, counting, send)


def photos(tmp_path: Path) -> list[Path]:
    from PIL import Image

    made = []
    for i, colour in enumerate(["red", "navy"]):
        path = tmp_path / f"gate-{i}.jpg"
        buffer = io.BytesIO()
        Image.new("RGB", (640, 480), colour).save(buffer, "JPEG", quality=95)
        path.write_bytes(buffer.getvalue() + os.urandom(50_000))  # trailing bytes: a big enough body
        os.utime(path, (TAKEN.timestamp(), TAKEN.timestamp()))
        made.append(path)
    return made


@pytest.fixture
def s3_site(seaweedfs: SeaweedFS, s3_bucket: str, tmp_path: Path) -> Iterator[tuple[str, BodyLog]]:
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"s3://{s3_bucket}/photos",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "AWS_ENDPOINT_URL": seaweedfs.endpoint_url,
            "AWS_ACCESS_KEY_ID": seaweedfs.access_key,
            "AWS_SECRET_ACCESS_KEY": seaweedfs.secret_key,
            "AWS_REGION": seaweedfs.region,
        }
    )
    log = BodyLog(create_app(settings))
    with serve(log) as url:

        async def cors() -> None:
            async with open_s3_client(s3_settings(seaweedfs), max_pool_connections=2) as client:
                from service.stack.seed import cors_rule

                await client.put_bucket_cors(
                    Bucket=s3_bucket, CORSConfiguration={"CORSRules": [cors_rule([url])]}
                )

        # Playwright's sync API owns this thread's event loop: configure from another.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, cors()).result()
        yield url, log


def upload_from_page(browser: Browser, site: str, files: list[Path], plate: str = "") -> list[str]:  # noqa: F811
    with open_tab(browser, site, viewport={"width": 1280, "height": 900}) as tab:
        page = tab.page
        response = page.goto("/")
        assert response is not None
        page.get_by_label("Images").set_input_files([str(f) for f in files])
        if plate:
            page.get_by_label("Plate number (optional)").fill(plate)
        page.get_by_role("button", name="Upload").click()
        rows = page.locator("#upload-list li")
        expect(rows).to_have_count(len(files))
        for i in range(len(files)):
            expect(rows.nth(i).locator(".state")).to_contain_text("Done:")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "uploads.png"), full_page=True)
        assert tab.errors == [], tab.errors
        keys = [rows.nth(i).get_attribute("data-key") or "" for i in range(len(files))]
        csp = response.headers["content-security-policy"]
        tab.requests.append(f"csp:{csp}")
        return [*keys, csp]


def day_archive(site: str) -> dict[str, str]:
    response = httpx.get(f"{site}/v1/zip", params={"from": "2025-01-05", "to": "2025-01-05"}, timeout=30)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}


def test_the_page_uploads_straight_to_s3(
    browser: Browser,  # noqa: F811
    s3_site: tuple[str, BodyLog],
    seaweedfs: SeaweedFS,
    tmp_path: Path,
) -> None:
    site, log = s3_site
    files = photos(tmp_path)
    *keys, csp = upload_from_page(browser, site, files, plate="MH12AB1234")
    assert keys == ["2025/01/05/MH12AB1234-1.jpg", "2025/01/05/MH12AB1234-2.jpg"]
    # connect-src names exactly the storage origin, nothing broader.
    assert f"connect-src 'self' {seaweedfs.endpoint_url}" in csp and "*" not in csp
    # No upload body went through the service: only small JSON bodies reached it.
    assert sum(n for method, path, n in log.requests if path.startswith("/v1/uploads")) < 2_000
    assert not [r for r in log.requests if r[0] == "PUT"]
    expected = {key: hashlib.sha256(f.read_bytes()).hexdigest() for key, f in zip(keys, files, strict=True)}
    assert day_archive(site) == expected


def test_the_page_uploads_through_the_service_with_folder_storage(
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "photos").mkdir()
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
        }
    )
    files = photos(tmp_path)
    with serve(create_app(settings)) as site:
        *keys, csp = upload_from_page(browser, site, files)
        assert keys == ["2025/01/05/gate-0.jpg", "2025/01/05/gate-1.jpg"]
        assert "connect-src" not in csp  # same origin only
        expected = {
            key: hashlib.sha256(f.read_bytes()).hexdigest() for key, f in zip(keys, files, strict=True)
        }
        assert day_archive(site) == expected
