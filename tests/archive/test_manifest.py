"""Manifests and archive ids: deterministic, content-addressed, round-trip through JSON."""

from __future__ import annotations

import dataclasses

import pytest

from service.archive.manifest import Candidate, Entry, Manifest, build_manifest, is_archive_id
from service.constants import ARCHIVE_FORMAT_VERSION

E = Entry(
    "2025/01/05/MH12AB1234-083015.jpg", "key", "2025/01/05/MH12AB1234-083015.jpg", 204800, "abc", 1736065815
)


def manifest(*entries: Entry, source: str = "s3://photos", filename: str = "a.zip") -> Manifest:
    return Manifest(entries=entries, source=source, filename=filename)


def test_id_is_deterministic_and_hex() -> None:
    first = manifest(E)
    assert first.archive_id == manifest(E).archive_id
    assert is_archive_id(first.archive_id)


@pytest.mark.parametrize(
    "change",
    [
        {"etag": "abd"},
        {"size": 204801},
        {"mtime": 1736065816},
        {"name": "other.jpg"},
        {"ref": "2025/01/05/other.jpg"},
        {"crc32": 1234},
    ],
)
def test_any_change_to_an_object_gives_a_new_id(change: dict[str, object]) -> None:
    assert manifest(dataclasses.replace(E, **change)).archive_id != manifest(E).archive_id  # type: ignore[arg-type]


def test_source_is_part_of_the_id_but_filename_is_not() -> None:
    assert manifest(E, source="s3://other").archive_id != manifest(E).archive_id
    assert manifest(E, filename="b.zip").archive_id == manifest(E).archive_id


def test_order_is_part_of_the_id() -> None:
    other = dataclasses.replace(E, name="b.jpg", ref="b.jpg")
    assert manifest(E, other).archive_id != manifest(other, E).archive_id


def test_json_round_trip() -> None:
    original = manifest(E, dataclasses.replace(E, name="x/ü.jpg", crc32=77), filename="ü.zip")
    restored = Manifest.from_json(original.to_json())
    assert restored == original
    assert restored.archive_id == original.archive_id
    assert restored.size == original.size


def test_json_from_another_format_is_refused() -> None:
    current = f'"format":{ARCHIVE_FORMAT_VERSION}'.encode()
    assert current in manifest(E).to_json()
    blob = manifest(E).to_json().replace(current, b'"format":99')
    with pytest.raises(ValueError):
        Manifest.from_json(blob)


def test_build_manifest_applies_the_name_policy() -> None:
    candidates = [
        Candidate("key", "a/Photo.jpg", "a/Photo.jpg", 1, "e1", 0),
        Candidate("key", "b/photo.jpg", "a/photo.JPG", 2, "e2", 0),
        Candidate("url", "https://h.test/x.jpg", "../../x.jpg", 3, "e3", 0),
    ]
    built = build_manifest(candidates, source="s3://b", filename="f.zip")
    names = [e.name for e in built.entries]
    assert names[0] == "a/Photo.jpg"
    assert names[1].casefold() != names[0].casefold()
    assert names[2] == "x.jpg"
    assert built.renamed == {"a/photo.JPG": names[1], "../../x.jpg": "x.jpg"}
    assert built.size == built.layout.size > built.content_bytes == 6
