"""The page at `/` in Debian's headless Chromium (Playwright's Python client, never a
downloaded browser) against a real uvicorn with folder storage and a folder cache.

As dates are picked the page lists the days that have photos and the archive's exact
size (from /v1/days). A small range downloads at once; a large one (over
ZIPEDGE_STREAM_MAX_ENTRIES) becomes a job whose progress the page follows (SSE, or polling
when SSE fails), survives a reload and turns into the download. Every saved file is
checked as an archive by independent readers. Waits have generous limits; nothing here
asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Download, Page, expect, sync_playwright

from service.app import create_app
from service.demo import write_demo_photos
from service.settings import Settings
from tests.servers import serve
from tests.zipcheck import check_archive

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Upper bounds for waits, so a slow machine waits rather than fails; never asserted.
TIMEOUT_MS = 60_000
STORE_KEY = "zipedge.job"

#: Three demo days of PER_DAY photos: one day streams, three are over the limit (a job).
LAST_DAY = date(2025, 1, 3)
PER_DAY = 3
#: A day with one large photo: a stream of it that the test stops reading holds the build
#: lock, so a job of the same day waits (running, 0 bytes) until the test reads on.
BIG_DAY = "2025-01-05"
BIG_SIZE = 24 << 20

ZIP = "/v1/zip"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_demo_photos(root, days=3, per_day=PER_DAY, end=LAST_DAY)
    big = root / "2025/01/05/KA01Z9999-120000.jpg"
    big.parent.mkdir(parents=True)
    big.write_bytes(os.urandom(BIG_SIZE))
    return root


def expected(root: Path, *days: str) -> dict[str, str]:
    """Member name → SHA-256, in key order, for every file under the given day folders."""
    keys = sorted(
        p.relative_to(root).as_posix() for day in days for p in (root / day).rglob("*") if p.is_file()
    )
    return {key: hashlib.sha256((root / key).read_bytes()).hexdigest() for key in keys}


@pytest.fixture
def site(photos: Path, tmp_path: Path) -> Iterator[str]:
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{photos}",
            "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "ZIPEDGE_STREAM_MAX_ENTRIES": str(PER_DAY),
        }
    )
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing (run scripts/system-deps)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_tab(browser: Browser, site: str, **options: object) -> Iterator[Tab]:
    context = browser.new_context(base_url=site, accept_downloads=True, **options)  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    try:
        tab = Tab(context.new_page())
        tab.page.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.page.on("request", lambda r: tab.requests.append(r.url))
        yield tab
    finally:
        context.close()


@pytest.fixture
def tab(browser: Browser, site: str) -> Iterator[Tab]:
    with open_tab(browser, site, viewport={"width": 1280, "height": 800}) as opened:
        yield opened


def pick(page: Page, start: str, end: str) -> None:
    page.get_by_label("From").fill(start)
    page.get_by_label("To").fill(end)


def saved(download: Download, tmp_path: Path) -> Path:
    path = tmp_path / "downloads" / download.suggested_filename
    download.save_as(path)
    assert download.failure() is None
    return path


def api_error(site: str, start: str, end: str) -> str:
    params = {"from": start, "to": end}
    response = httpx.get(f"{site}/v1/zip", params=params, headers={"Accept": "application/json"})
    assert response.status_code >= 400
    message: str = response.json()["error"]["message"]
    return message


def polled(tab: Tab) -> bool:
    """Whether the page asked for a job's status (GET /v1/jobs/<id>) rather than only SSE."""
    return any(re.search(r"/v1/jobs/[^/?]+$", url) for url in tab.requests)


def stored_job(page: Page) -> dict[str, str] | None:
    raw = page.evaluate(f"localStorage.getItem('{STORE_KEY}')")
    return None if raw is None else dict(json.loads(raw))


def test_page_loads_clean_labelled_and_keyboard_usable(tab: Tab, site: str) -> None:
    page = tab.page
    before = datetime.now(UTC).date()
    response = page.goto("/")
    after = datetime.now(UTC).date()
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["cache-control"] == "no-cache"
    assert page.evaluate("document.documentElement.lang") == "en"
    # Nothing inline (the CSP would block it) and nothing from another origin.
    assert page.locator("script:not([src]), style, [style]").count() == 0
    assert all(url.startswith(site) for url in tab.requests), tab.requests

    # Default: the last 7 days, UTC.
    assert (page.get_by_label("From").input_value(), page.get_by_label("To").input_value()) in {
        ((day - timedelta(days=6)).isoformat(), day.isoformat()) for day in (before, after)
    }
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter((el) => ![...el.labels].some((label) => label.textContent.trim()))
            .map((el) => el.id || el.name)"""
    )
    assert unlabelled == []
    assert page.get_by_role("alert").count() == 1

    # Tab from the top goes From → To → Download (a date input takes several presses).
    visited: list[str] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.id")
        if not visited or visited[-1] != focused:
            visited.append(focused)
        if focused == "download":
            break
    assert visited == ["from", "to", "download"]
    assert tab.errors == []

    # Enter on the button submits: the default range has no photos, and the API says so.
    start, end = page.get_by_label("From").input_value(), page.get_by_label("To").input_value()
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text(api_error(site, start, end))


def test_small_range_downloads_at_once(tab: Tab, photos: Path, tmp_path: Path) -> None:
    page = tab.page
    page.goto("/")
    pick(page, "2025-01-02", "2025-01-02")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    download = info.value
    assert download.suggested_filename == "photos-2025-01-02.zip"
    check_archive(saved(download, tmp_path), expected(photos, "2025/01/02"))
    expect(page.get_by_role("status")).to_contain_text("Download started")
    expect(page.locator("#job")).to_be_hidden()
    assert stored_job(page) is None
    assert tab.errors == []


def follow_job_to_its_download(page: Page, photos: Path, tmp_path: Path) -> None:
    pick(page, "2025-01-01", "2025-01-03")
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    download = info.value
    assert download.suggested_filename == "photos-2025-01-01_2025-01-03.zip"
    check_archive(saved(download, tmp_path), expected(photos, "2025/01/01", "2025/01/02", "2025/01/03"))
    # The progress view replaced the form and now offers the file again.
    expect(page.get_by_role("heading", name="Your archive is ready")).to_be_focused()
    assert page.locator("#range").is_hidden()
    expect(page.locator("#bar")).to_have_attribute("value", "1")
    assert "/v1/cache/" in download.url  # built by the job, delivered from the cache
    expect(page.get_by_role("link", name="Download again")).to_have_attribute("href", download.url)
    assert stored_job(page) is None


def test_large_range_becomes_a_job_then_downloads(tab: Tab, photos: Path, tmp_path: Path) -> None:
    page = tab.page
    page.goto("/")
    follow_job_to_its_download(page, photos, tmp_path)
    assert any(url.endswith("/events") for url in tab.requests) and not polled(tab)  # live, by SSE
    assert tab.errors == []


@pytest.mark.parametrize("fault", ["sse-blocked", "no-eventsource"])
def test_job_is_followed_by_polling_without_sse(tab: Tab, photos: Path, tmp_path: Path, fault: str) -> None:
    page = tab.page
    if fault == "sse-blocked":  # e.g. a proxy that refuses or cuts event streams
        page.route("**/v1/jobs/*/events", lambda route: route.abort())
    else:
        page.add_init_script("delete window.EventSource;")
    page.goto("/")
    follow_job_to_its_download(page, photos, tmp_path)
    assert polled(tab)
    if fault == "no-eventsource":
        assert not any(url.endswith("/events") for url in tab.requests)


def test_reload_during_a_job_resumes_it(tab: Tab, site: str, photos: Path, tmp_path: Path) -> None:
    page = tab.page
    params = {"from": BIG_DAY, "to": BIG_DAY}
    with httpx.Client(base_url=site, timeout=60) as client, client.stream("GET", ZIP, params=params) as hold:
        assert hold.status_code == 200
        chunks = hold.iter_bytes()
        next(chunks)  # the stream has the build lock; unread, it stalls and keeps it
        job = client.post("/v1/jobs", json=params)
        assert job.status_code == 202
        job_id = job.json()["id"]

        # Where a browser lands after GET /v1/zip answered 303.
        page.goto(f"/?job={job_id}")
        expect(page.locator("#job")).to_be_visible()
        expect(page.locator("#progress-text")).to_contain_text("0 of 1 photo")
        expect(page.locator("#job-title")).to_be_focused()
        assert page.url == f"{site}/"  # the id moved to localStorage
        assert (stored_job(page) or {}).get("id") == job_id

        page.reload()
        expect(page.locator("#job")).to_be_visible()
        expect(page.locator("#progress-text")).to_contain_text("0 of 1 photo")
        expect(page.get_by_role("button", name="Cancel")).to_be_visible()
        assert page.locator("#range").is_hidden()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "page-desktop-progress.png")
        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        page.screenshot(path=SCREENSHOTS / "page-mobile-progress.png")

        with page.expect_download() as info:
            for _ in chunks:  # read on: the stream finishes and commits; the job is ready
                pass
    download = info.value
    assert download.suggested_filename == f"photos-{BIG_DAY}.zip"
    check_archive(saved(download, tmp_path), expected(photos, "2025/01/05"))
    expect(page.get_by_role("heading", name="Your archive is ready")).to_be_visible()
    assert stored_job(page) is None
    assert tab.errors == []


def test_a_job_that_finished_while_away_is_downloaded_on_return(
    tab: Tab, site: str, photos: Path, tmp_path: Path
) -> None:
    page = tab.page
    with httpx.Client(base_url=site, timeout=60) as client:
        job = client.post("/v1/jobs", json={"from": "2025-01-01", "to": "2025-01-03"}).json()
        with client.stream("GET", job["events_url"]) as events:  # wait for the final event
            assert any(line == "event: ready" for line in events.iter_lines())
    page.goto("/")
    ref = {k: job[k] for k in ("id", "status_url", "events_url")}
    page.evaluate("([key, ref]) => localStorage.setItem(key, JSON.stringify(ref))", [STORE_KEY, ref])
    with page.expect_download() as info:
        page.reload()
    check_archive(saved(info.value, tmp_path), expected(photos, "2025/01/01", "2025/01/02", "2025/01/03"))
    expect(page.get_by_role("link", name="Download again")).to_be_visible()
    assert stored_job(page) is None


def test_cancel_and_start_over(tab: Tab, site: str) -> None:
    page = tab.page
    params = {"from": BIG_DAY, "to": BIG_DAY}
    with httpx.Client(base_url=site, timeout=60) as client, client.stream("GET", ZIP, params=params) as hold:
        chunks = hold.iter_bytes()
        next(chunks)  # hold the build lock so the job cannot finish first
        job_id = client.post("/v1/jobs", json=params).json()["id"]
        page.goto(f"/?job={job_id}")
        expect(page.locator("#progress-text")).to_contain_text("0 of 1 photo")
        page.get_by_role("button", name="Cancel").click()
        expect(page.get_by_role("heading", name="Download cancelled")).to_be_focused()
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert stored_job(page) is None
        page.get_by_role("button", name="Start over").click()
        expect(page.get_by_label("From")).to_be_focused()
        expect(page.locator("#job")).to_be_hidden()
        for _ in chunks:
            pass
    assert tab.errors == []


def test_invalid_range_shows_the_api_message(tab: Tab, site: str) -> None:
    page = tab.page
    page.goto("/")
    pick(page, "2025-01-03", "2025-01-01")
    page.get_by_role("button", name="Download").click()
    message = api_error(site, "2025-01-03", "2025-01-01")
    expect(page.get_by_role("alert")).to_have_text(message)
    expect(page.get_by_role("button", name="Download")).to_be_enabled()
    assert page.locator("#job").is_hidden()


def test_screenshots_phone_and_desktop(browser: Browser, site: str, tab: Tab) -> None:
    """Artifacts for a person to look at; the only assertion is no sideways scrolling."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.goto("/")
    tab.page.screenshot(path=SCREENSHOTS / "page-desktop.png")
    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    with open_tab(browser, site, **phone) as mobile:
        mobile.page.goto("/")
        assert mobile.page.evaluate("document.documentElement.scrollWidth") <= 360
        mobile.page.screenshot(path=SCREENSHOTS / "page-mobile.png")
        assert mobile.errors == []


def test_the_days_with_photos_and_the_archive_size_show_before_the_click(
    browser: Browser, tab: Tab, site: str, photos: Path, tmp_path: Path
) -> None:
    page = tab.page
    page.goto("/")
    # The default range (the last 7 days) has no photos: the page says so before any click.
    expect(page.locator("#summary")).to_have_text("No photos on these days.")
    expect(page.locator("#days")).to_be_hidden()

    pick(page, "2025-01-01", "2025-01-05")
    days = page.get_by_role("table", name="Days with photos in this range")
    expect(days.locator("tbody tr")).to_have_count(4)  # 2025-01-04 has none: not listed
    rows = [
        [cell.inner_text() for cell in row.locator("th, td").all()] for row in days.locator("tbody tr").all()
    ]
    stamps = [t.get_attribute("datetime") for t in days.locator("time").all()]
    assert stamps == ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-05"]
    assert rows[0][0] == "Wed, 1 Jan 2025" and [row[1] for row in rows] == ["3", "3", "3", "1"]
    assert rows[3][2] == "25\u00a0MB"  # the one large photo (24 MiB)
    # Ten photos are more than a stream may hold here (a job): no layout, the photos' bytes.
    expect(page.locator("#summary")).to_contain_text("10\u00a0photos on 4 of 5\u00a0days.")
    expect(page.locator("#summary")).to_contain_text("prepared in the background first")

    # One day streams: its exact archive size is shown, and is what the download weighs.
    pick(page, "2025-01-02", "2025-01-02")
    expect(page.locator("#summary")).to_contain_text("3\u00a0photos on 1 of 1\u00a0day. The archive is ")
    expect(page.locator("#summary")).to_contain_text("downloads at once")
    head = httpx.head(f"{site}{ZIP}", params={"from": "2025-01-02", "to": "2025-01-02"})
    expect(page.locator("#archive-size")).to_have_attribute("value", head.headers["content-length"])
    assert re.fullmatch(r"[0-9.]+\u00a0kB", page.locator("#archive-size").inner_text())
    assert page.get_by_role("button", name="Download").get_attribute("aria-describedby") == "summary"
    with page.expect_download() as info:
        page.get_by_role("button", name="Download").click()
    path = saved(info.value, tmp_path)
    assert path.stat().st_size == int(head.headers["content-length"])
    check_archive(path, expected(photos, "2025/01/02"))
    assert any("/v1/days?from=2025-01-02&to=2025-01-02" in url for url in tab.requests)
    assert tab.errors == []

    # On a phone the table fits the width.
    phone = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
    with open_tab(browser, site, **phone) as mobile:
        mobile.page.goto("/")
        pick(mobile.page, "2025-01-01", "2025-01-05")
        expect(mobile.page.locator("#day-rows tr")).to_have_count(4)
        assert mobile.page.evaluate("document.documentElement.scrollWidth") <= 360
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        mobile.page.screenshot(path=SCREENSHOTS / "page-mobile-days.png", full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})
    pick(page, "2025-01-01", "2025-01-05")
    expect(page.locator("#day-rows tr")).to_have_count(4)
    page.screenshot(path=SCREENSHOTS / "page-desktop-days.png", full_page=True)


# --- with authentication ---------------------------------------------------------------------

SECRET = "an-e2e-secret-that-is-long-enough-32"


@pytest.fixture
def private_site(photos: Path, tmp_path: Path) -> Iterator[str]:
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{photos}",
            "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            "ZIPEDGE_STREAM_MAX_ENTRIES": str(PER_DAY),
            "ZIPEDGE_AUTH_JWT_SECRET": SECRET,
        }
    )
    with serve(create_app(settings)) as url:
        yield url


def test_with_a_token_downloads_are_signed_links(
    browser: Browser, private_site: str, photos: Path, tmp_path: Path
) -> None:
    import jwt

    token = jwt.encode({"sub": "alice", "scope": "download", "exp": 9_999_999_999}, SECRET, algorithm="HS256")
    with open_tab(browser, private_site) as tab:
        # Without a token the page asks for one.
        tab.page.goto("/")
        pick(tab.page, "2025-01-02", "2025-01-02")
        tab.page.get_by_role("button", name="Download").click()
        expect(tab.page.get_by_role("alert")).to_contain_text("access token")
    with open_tab(browser, private_site) as tab:
        # With one (in the fragment, which no server sees), a download is a signed link the
        # browser opens itself, and a job is followed by polling with the header.
        page = tab.page
        page.goto(f"/#token={token}")
        pick(page, "2025-01-02", "2025-01-02")
        with page.expect_download() as info:
            page.get_by_role("button", name="Download").click()
        download = info.value
        assert "sig=" in download.url and "sub=alice" in download.url
        check_archive(saved(download, tmp_path), expected(photos, "2025/01/02"))
        assert "#token" not in page.url
        follow_job_to_its_download(page, photos, tmp_path)
        assert polled(tab) and not any(url.endswith("/events") for url in tab.requests)
