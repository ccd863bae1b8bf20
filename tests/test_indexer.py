"""`zipedge index`: an operator primes the object index for some days, so the very first
archive of them already has every CRC in its local headers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from service.app import create_app
from service.settings import Settings
from tests.servers import serve
from tests.zipcheck import check_archive, descriptor_flags, sha256

DAYS = ["2025/01/01", "2025/01/02"]


def photos(root: Path) -> dict[str, bytes]:
    files = {f"{day}/MH12AB{i:04d}.jpg": os.urandom(1000 + i) for day in DAYS for i in range(15)}
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def zipedge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env={**os.environ, **env}, capture_output=True, text=True
    )


def test_index_then_the_first_archive_has_no_descriptors(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    files = photos(root)
    env = {"ZIPEDGE_SOURCE": f"file://{root}", "ZIPEDGE_CACHE": "", "ZIPEDGE_DATA_DIR": str(tmp_path / "var")}
    first = zipedge(env, "index", "--from", "2025-01-01", "--to", "2025-01-02", "--concurrency", "4")
    assert first.returncode == 0, first.stderr
    assert "2025-01-01:" in first.stderr and "2025-01-02:" in first.stderr  # progress, day by day
    assert "done: 30 CRCs learned, 0 already known, 0 failed" in first.stderr
    again = zipedge(env, "index", "--from", "2025-01-01", "--to", "2025-01-02")
    assert "done: 0 CRCs learned, 30 already known" in again.stderr  # resumable: nothing twice

    settings = Settings.from_env(env)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as client:
        archive = client.get("/v1/zip", params={"from": "2025-01-01", "to": "2025-01-02"})
    path = tmp_path / "primed.zip"
    path.write_bytes(archive.content)
    assert not any(descriptor_flags(path))
    check_archive(path, {k: sha256(v) for k, v in sorted(files.items())})  # streaming reader too


def test_index_reports_what_it_could_not_read(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    photos(root)
    unreadable = root / DAYS[0] / "MH12AB0003.jpg"
    unreadable.chmod(0)
    env = {"ZIPEDGE_SOURCE": f"file://{root}", "ZIPEDGE_CACHE": "", "ZIPEDGE_DATA_DIR": str(tmp_path / "var")}
    try:
        done = zipedge(env, "index", "--from", "2025-01-01", "--to", "2025-01-01")
    finally:
        unreadable.chmod(0o644)
    if os.geteuid() == 0:  # root reads anything: nothing to report then
        assert done.returncode == 0
        return
    assert done.returncode == 1 and "failed: 2025/01/01/MH12AB0003.jpg" in done.stderr


def test_index_refuses_a_bad_day(tmp_path: Path) -> None:
    env = {"ZIPEDGE_SOURCE": f"file://{tmp_path}", "ZIPEDGE_DATA_DIR": str(tmp_path / "var")}
    done = zipedge(env, "index", "--from", "2025-13-01", "--to", "2025-01-02")
    assert done.returncode == 2 and "'from' is not a calendar day" in done.stderr
