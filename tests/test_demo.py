"""`zipedge demo`: real, deterministic JPEGs in date-partitioned folders."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from service.demo import demo_photos, write_demo_photos

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
    write_demo_photos(tmp_path, days=1, per_day=1)
    after = datetime.now(UTC).date()
    (folder,) = {f.parent.relative_to(tmp_path).as_posix() for f in _files(tmp_path)}
    assert folder in {f"{d:%Y/%m/%d}" for d in (before, after)}


@pytest.mark.parametrize(("days", "per_day"), [(0, 1), (1, -1)])
def test_bad_arguments(tmp_path: Path, days: int, per_day: int) -> None:
    with pytest.raises(ValueError):
        write_demo_photos(tmp_path, days=days, per_day=per_day)
