"""The folder source (embedded default): never leaves its root, skips what is not a photo."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.exceptions import InvalidKey, ObjectChanged, ObjectMissing, ObjectNotFound
from service.sources.folder import FolderSource


@pytest.fixture
def root(tmp_path: Path) -> Path:
    day = tmp_path / "photos" / "2025" / "01" / "02"
    (day / "night").mkdir(parents=True)
    (day / "A.jpg").write_bytes(b"a" * 10)
    (day / "night" / "B.jpg").write_bytes(b"b" * 20)
    (day / ".DS_Store").write_bytes(b"junk")
    (day / ".hidden").mkdir()
    (day / ".hidden" / "C.jpg").write_bytes(b"c")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    (day / "escape.jpg").symlink_to(secret)
    (day / "inside.jpg").symlink_to(day / "A.jpg")
    return tmp_path / "photos"


async def test_lists_a_day_recursively_without_hidden_files_or_escapes(root: Path) -> None:
    found = await FolderSource(root).list("2025/01/02/")
    assert [o.key for o in found] == ["2025/01/02/A.jpg", "2025/01/02/inside.jpg", "2025/01/02/night/B.jpg"]
    assert [o.size for o in found] == [10, 10, 20]
    assert await FolderSource(root).list("2025/01/03/") == []


@pytest.mark.parametrize("key", ["../secret.txt", "/etc/passwd", "2025/01/02/../../../../secret.txt"])
async def test_traversal_is_refused(root: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        await FolderSource(root).stat(key)


async def test_a_symlink_out_of_the_root_is_refused(root: Path) -> None:
    source = FolderSource(root)
    with pytest.raises(InvalidKey):
        await source.stat("2025/01/02/escape.jpg")
    with pytest.raises(ObjectMissing):
        async for _ in source.read("2025/01/02/escape.jpg"):
            pass


async def test_read_from_an_offset_and_validators(root: Path) -> None:
    source = FolderSource(root)
    info = await source.stat("2025/01/02/night/B.jpg")
    assert b"".join([c async for c in source.read(info.key, offset=5, etag=info.etag)]) == b"b" * 15
    path = root / "2025/01/02/night/B.jpg"
    path.write_bytes(b"changed!" * 3)
    os.utime(path, (1, 1))
    with pytest.raises(ObjectChanged):
        async for _ in source.read(info.key, etag=info.etag):
            pass
    with pytest.raises(ObjectNotFound):
        await source.stat("2025/01/02/none.jpg")


async def test_a_name_no_read_accepts_is_skipped_not_the_whole_day(root: Path) -> None:
    """`a\\b.jpg` is a fine file name on Linux but not a key (backslashes are refused,
    as Windows would treat them as separators); a control character likewise. Listed,
    they would break every download of their day at read time."""
    day = root / "2025" / "01" / "02"
    (day / "back\\slash.jpg").write_bytes(b"x")
    (day / "bell\x07.jpg").write_bytes(b"y")
    source = FolderSource(root)
    listed = await source.list("2025/01/02/")
    assert listed and all("\\" not in o.key and "\x07" not in o.key for o in listed)
    for info in listed:  # and everything listed reads
        assert b"".join([chunk async for chunk in source.read(info.key, etag=info.etag)])
