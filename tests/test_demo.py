"""`zipedge demo`: real, deterministic JPEGs in date-partitioned folders."""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from service.demo import (
    EXAMPLE_DAYS,
    EXAMPLE_KEY,
    EXAMPLE_PHOTOS,
    demo_photos,
    write_demo_photos,
    write_example_photos,
)

NAME = re.compile(r"(?P<plate>[A-Z]{2}[0-9]{2}[A-Z]{1,2}[0-9]{4})-(?P<hms>[0-9]{6})\.jpg")
END = date(2025, 1, 5)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert write_demo_photos(root, days=3, per_day=10, end=END) == 30
    return root


def test_day_folders(demo_root: Path) -> None:
    files = _files(demo_root)
    assert len(files) == 30
    folders = {f.parent.relative_to(demo_root).as_posix() for f in files}
    assert folders == {"2025/01/03", "2025/01/04", "2025/01/05"}
    for folder in folders:
        assert len(list((demo_root / folder).iterdir())) == 10


def test_names_mtimes_and_images(demo_root: Path) -> None:
    for path in _files(demo_root):
        match = NAME.fullmatch(path.name)
        assert match, path.name
        year, month, day = path.parent.relative_to(demo_root).parts
        taken = datetime.strptime(f"{year}{month}{day}{match['hms']}", "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        assert int(path.stat().st_mtime) == calendar.timegm(taken.utctimetuple())
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.size == (640, 480)
            image.load()  # decodes the whole file: a truncated JPEG fails here
        assert 10_000 < path.stat().st_size < 200_000


def test_no_temporary_files_left(demo_root: Path) -> None:
    assert not [p for p in demo_root.rglob(".*")]


def test_same_seed_same_bytes_other_seed_other_names(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_demo_photos(a, days=1, per_day=5, end=END, seed=1)
    write_demo_photos(b, days=1, per_day=5, end=END, seed=1)
    write_demo_photos(c, days=1, per_day=5, end=END, seed=2)
    files_a, files_b = _files(a), _files(b)
    assert [p.relative_to(a) for p in files_a] == [p.relative_to(b) for p in files_b]
    assert [p.read_bytes() for p in files_a] == [p.read_bytes() for p in files_b]
    assert {p.name for p in files_a}.isdisjoint({p.name for p in _files(c)})


def test_rerun_is_idempotent_and_repairs(tmp_path: Path) -> None:
    assert write_demo_photos(tmp_path, days=2, per_day=4, end=END) == 8
    before = {p: p.read_bytes() for p in _files(tmp_path)}
    assert write_demo_photos(tmp_path, days=2, per_day=4, end=END) == 0
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before

    victim = next(iter(before))
    victim.unlink()
    assert write_demo_photos(tmp_path, days=2, per_day=4, end=END) == 1
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before

    # A later end overlaps: the shared day is not written again.
    assert write_demo_photos(tmp_path, days=2, per_day=4, end=END + timedelta(days=1)) == 4
    assert len(_files(tmp_path)) == 12


def test_more_photos_per_day_only_adds() -> None:
    few = {p.key for p in demo_photos(END, 40)}
    many = {p.key for p in demo_photos(END, 50)}
    assert len(few) == 40
    assert len(many) == 50
    assert few <= many


def test_photos_are_in_capture_order_within_the_day() -> None:
    photos = demo_photos(END, 40)
    assert [p.taken_at for p in photos] == sorted(p.taken_at for p in photos)
    assert all(p.taken_at.date() == END and p.taken_at.tzinfo is UTC for p in photos)
    assert all(p.key.startswith("2025/01/05/") for p in photos)


def test_end_defaults_to_today_utc(tmp_path: Path) -> None:
    before = datetime.now(UTC).date()
    write_demo_photos(tmp_path, days=2, per_day=1)
    after = datetime.now(UTC).date()
    folders = {f.parent.relative_to(tmp_path).as_posix() for f in _files(tmp_path)}
    # today's one photo may not be taken yet; yesterday's is
    assert {f"{d - timedelta(days=1):%Y/%m/%d}" for d in (before, after)} & folders
    assert folders <= {f"{d - timedelta(days=i):%Y/%m/%d}" for d in (before, after) for i in (0, 1)}


def test_no_photo_is_taken_after_now(tmp_path: Path) -> None:
    """Today has only the photos taken so far: no mtime, hence no Last-Modified, lies in
    the future. A later run adds the rest of the day, the same files as a run at midnight."""
    now = datetime(2025, 1, 5, 9, 30, tzinfo=UTC)
    taken = [p for p in demo_photos(END, 40) if p.taken_at <= now]
    assert 0 < len(taken) < 40
    assert write_demo_photos(tmp_path, days=2, per_day=40, end=END, now=now) == 40 + len(taken)
    today = sorted((tmp_path / "2025/01/05").iterdir())
    assert [p.name for p in today] == sorted(p.key.rsplit("/", 1)[1] for p in taken)
    assert max(p.stat().st_mtime for p in _files(tmp_path)) <= now.timestamp()

    later = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
    assert write_demo_photos(tmp_path, days=2, per_day=40, end=END, now=later) == 40 - len(taken)
    complete = tmp_path.parent / "complete"
    write_demo_photos(complete, days=2, per_day=40, end=END, now=later)
    assert [p.relative_to(tmp_path) for p in _files(tmp_path)] == [
        p.relative_to(complete) for p in _files(complete)
    ]


def test_the_default_now_is_the_current_time(tmp_path: Path) -> None:
    write_demo_photos(tmp_path, days=1, per_day=40)
    files = _files(tmp_path)
    assert all(p.stat().st_mtime <= time.time() for p in files)


def test_example_photos_are_the_readme_days_with_the_posted_key(tmp_path: Path) -> None:
    assert EXAMPLE_DAYS == (date(2025, 1, 1), date(2025, 1, 5))
    assert EXAMPLE_KEY == "2025/01/05/MH12AB1234-083015.jpg"
    assert [p.key for p in EXAMPLE_PHOTOS] == [EXAMPLE_KEY, "2025/01/04/KA03MX0042-171502.jpg"]
    assert write_example_photos(tmp_path, per_day=2) == 12
    folders = {f.parent.relative_to(tmp_path).as_posix() for f in _files(tmp_path)}
    assert folders == {f"2025/01/0{d}" for d in range(1, 6)}
    example = tmp_path / EXAMPLE_KEY
    assert int(example.stat().st_mtime) == calendar.timegm((2025, 1, 5, 8, 30, 15, 0, 0, 0))
    with Image.open(example) as image:
        assert image.format == "JPEG"
    assert write_example_photos(tmp_path, per_day=2) == 0  # idempotent


@pytest.mark.parametrize(("days", "per_day"), [(0, 1), (1, -1)])
def test_bad_arguments(tmp_path: Path, days: int, per_day: int) -> None:
    with pytest.raises(ValueError):
        write_demo_photos(tmp_path, days=days, per_day=per_day)
