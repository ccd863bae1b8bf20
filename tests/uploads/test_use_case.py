"""Uploads over the in-memory twins: validation, ownership, verification, filing without
overwriting, idempotent and racing completes, the janitor's sweep."""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import replace
from typing import Any

import pytest

from service.exceptions import (
    InvalidParameter,
    TooLarge,
    UnknownUpload,
    UploadIncomplete,
    UploadMismatch,
)
from service.identity import ALL_SCOPES, Caller
from service.index.memory import MemoryObjectIndex
from service.listing import DirectListings
from service.pending.memory import MemoryPendingStore
from service.settings import Settings
from service.sources.memory import MemorySource
from service.staging.memory import MemoryStaging
from service.upload_request import body_signature, parse_crc32, parse_taken_at, upload_name
from service.uploads import Uploads

ALICE = Caller(sub="alice", scopes=frozenset({"upload"}))
BOB = Caller(sub="bob", scopes=frozenset({"upload"}))
ADMIN = Caller(sub="ops", scopes=ALL_SCOPES)
NOW = 1_736_000_000.0  # 2025-01-04T14:13:20Z
PHOTO = b"\xff\xd8" + b"photo" * 1000


class Bumps(DirectListings):
    def __init__(self, source: MemorySource) -> None:
        super().__init__(source)
        self.bumped: list[str] = []

    async def bump(self, day: Any) -> int:
        self.bumped.append(day.isoformat())
        return len(self.bumped)


@pytest.fixture
def world() -> tuple[Uploads, MemoryStaging, MemoryPendingStore, Bumps, MemoryObjectIndex]:
    source = MemorySource()
    staging = MemoryStaging(source)
    pending = MemoryPendingStore()
    listings = Bumps(source)
    index = MemoryObjectIndex()
    settings = Settings.from_env(
        {"ZIPEDGE_SOURCE": "file:///srv/photos", "ZIPEDGE_UPLOAD_MAX_BYTES": "100000"}
    )
    uploads = Uploads(
        settings=settings,
        source_id="memory",
        staging=staging,
        pending=pending,
        index=index,
        listings=listings,
        link_key=b"k",
        clock=lambda: NOW,
    )
    return uploads, staging, pending, listings, index


def announce(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filename": "MH12AB1234",
        "content_type": "image/jpeg",
        "size": len(PHOTO),
        "crc32": zlib.crc32(PHOTO),
        "taken_at": "2025-01-03T08:30:15Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def url(upload_id: str, expires: int) -> str:
    return f"/body/{upload_id}"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (announce(content_type="text/html"), InvalidParameter),
        (announce(size=0), InvalidParameter),
        (announce(size=True), InvalidParameter),
        (announce(size=100_001), TooLarge),
        (announce(filename="../../"), InvalidParameter),
        (announce(filename=""), InvalidParameter),
        (announce(crc32="not hex"), InvalidParameter),
        (announce(crc32=-1), InvalidParameter),
        (announce(taken_at="yesterday"), InvalidParameter),
        (announce(taken_at="2099-01-01T00:00:00Z"), InvalidParameter),
        (announce(taken_at="1970-01-01T00:00:00Z"), InvalidParameter),
        (announce(colour="red"), InvalidParameter),
        ([1, 2], InvalidParameter),
    ],
)
async def test_bad_announcements_are_refused(world: Any, body: Any, error: type[Exception]) -> None:
    uploads = world[0]
    with pytest.raises(error):
        await uploads.create(ALICE, body, body_url=url)


def test_the_name_policy_keeps_one_visible_file_name() -> None:
    assert upload_name("MH12AB1234", "image/jpeg") == "MH12AB1234.jpg"
    assert upload_name("a/b/../c.png", "image/png") == "c.png"
    assert upload_name(".hidden.jpg", "image/jpeg") == "hidden.jpg"
    assert upload_name("CON", "image/webp") == "_CON.webp"
    assert upload_name("x\x00y.jpg", "image/jpeg") == "x_y.jpg"
    assert parse_crc32("0x1f") == 31 and parse_crc32("DEADBEEF") == 0xDEADBEEF and parse_crc32(7) == 7
    assert parse_taken_at("2025-01-03T10:00:00+02:00", NOW) == parse_taken_at("2025-01-03T08:00:00Z", NOW)
    assert parse_taken_at(None, NOW) == NOW


async def test_the_whole_flow_files_the_photo_under_its_day(world: Any) -> None:
    uploads, staging, pending, listings, index = world
    ticket = await uploads.create(ALICE, announce(), body_url=url)
    assert ticket.headers == {
        "Content-Length": str(len(PHOTO)),
        "Content-Type": "image/jpeg",
        "If-None-Match": "*",
    }
    staging.stage(ticket.record.staging_key, PHOTO, "image/jpeg")
    done = await uploads.complete(ALICE, ticket.record.id)
    assert done.result is not None and done.result["key"] == "2025/01/03/MH12AB1234.jpg"
    assert staging.source.objects["2025/01/03/MH12AB1234.jpg"][0] == PHOTO
    assert not staging.bodies  # the staged body is gone
    assert listings.bumped == ["2025-01-03"]
    assert await index.lookup("memory", [(done.result["key"], done.result["etag"])]) == [zlib.crc32(PHOTO)]
    # Idempotent: the same answer, nothing filed twice, no second bump.
    assert await uploads.complete(ALICE, ticket.record.id) == done
    assert listings.bumped == ["2025-01-03"]


async def test_uploads_belong_to_their_owner(world: Any) -> None:
    uploads, staging, *_ = world
    ticket = await uploads.create(ALICE, announce(), body_url=url)
    for call in (uploads.get, uploads.complete, uploads.abandon):
        with pytest.raises(UnknownUpload):
            await call(BOB, ticket.record.id)
    assert (await uploads.get(ADMIN, ticket.record.id)).owner == "alice"
    with pytest.raises(UnknownUpload):
        await uploads.get(ALICE, "not-an-id")


async def test_complete_before_the_body_is_a_clear_409(world: Any) -> None:
    uploads, *_ = world
    ticket = await uploads.create(ALICE, announce(), body_url=url)
    with pytest.raises(UploadIncomplete):
        await uploads.complete(ALICE, ticket.record.id)


@pytest.mark.parametrize(
    ("body", "kind"),
    [(PHOTO[:-1], "image/jpeg"), (PHOTO, "image/png"), (PHOTO[:-1] + b"X", "image/jpeg")],
    ids=["size", "type", "crc"],
)
async def test_a_body_not_as_announced_fails_and_is_removed(world: Any, body: bytes, kind: str) -> None:
    uploads, staging, *_ = world
    ticket = await uploads.create(ALICE, announce(), body_url=url)
    staging.stage(ticket.record.staging_key, body, kind)
    with pytest.raises(UploadMismatch):
        await uploads.complete(ALICE, ticket.record.id)
    assert not staging.bodies and not staging.source.objects
    with pytest.raises(UploadMismatch):  # and says so again
        await uploads.complete(ALICE, ticket.record.id)


async def test_without_a_declared_crc_it_is_computed(world: Any) -> None:
    uploads, staging, *_, index = world
    ticket = await uploads.create(ALICE, announce(crc32=None), body_url=url)
    staging.direct = False  # a store that keeps no checksum: read once
    staging.stage(ticket.record.staging_key, PHOTO, "")
    done = await uploads.complete(ALICE, ticket.record.id)
    assert done.result is not None and done.result["crc32"] == zlib.crc32(PHOTO)


async def test_a_clash_gets_a_deterministic_suffix_and_racing_completes_one_object(world: Any) -> None:
    uploads, staging, *_ = world
    staging.source.put("2025/01/03/MH12AB1234.jpg", b"someone else's")
    ticket = await uploads.create(ALICE, announce(), body_url=url)
    staging.stage(ticket.record.staging_key, PHOTO, "image/jpeg")
    results = await asyncio.gather(*(uploads.complete(ALICE, ticket.record.id) for _ in range(5)))
    keys = {r.result["key"] for r in results if r.result}
    assert keys == {f"2025/01/03/MH12AB1234-{ticket.record.id[:8]}.jpg"}
    assert staging.source.objects["2025/01/03/MH12AB1234.jpg"][0] == b"someone else's"
    assert len(staging.source.objects) == 2


async def test_abandon_and_the_janitor(world: Any) -> None:
    uploads, staging, pending, *_ = world
    gone = await uploads.create(ALICE, announce(), body_url=url)
    staging.stage(gone.record.staging_key, PHOTO, "image/jpeg")
    await uploads.abandon(ALICE, gone.record.id)
    assert not staging.bodies and await pending.get(gone.record.id) is None

    old = await uploads.create(ALICE, announce(), body_url=url)
    await pending.delete(old.record.id)
    await pending.put(replace(old.record, created_at=NOW - 86_400 - 1))
    staging.stage(old.record.staging_key, PHOTO, "image/jpeg")
    fresh = await uploads.create(ALICE, announce(), body_url=url)
    staging.stage(fresh.record.staging_key, PHOTO, "image/jpeg")
    lines = await uploads.sweep()
    assert len(lines) == 1 and old.record.id in lines[0] and "abandoned" in lines[0]
    assert await pending.get(old.record.id) is None and old.record.staging_key not in staging.bodies
    assert await pending.get(fresh.record.id) is not None and fresh.record.staging_key in staging.bodies
    assert await uploads.sweep() == []


def test_body_signatures_bind_id_and_expiry() -> None:
    sig = body_signature(b"k", "a" * 32, 100)
    assert sig != body_signature(b"k", "b" * 32, 100) != body_signature(b"k", "a" * 32, 101)
    assert sig != body_signature(b"other", "a" * 32, 100)


def test_staging_is_never_a_day_and_defaults_beside_the_days() -> None:
    from service.exceptions import ConfigError

    folder = Settings.from_env({"ZIPEDGE_SOURCE": "file:///srv/photos"})
    assert str(folder.staging) == "file:///srv/photos/_staging" and folder.staging_in_source == "_staging/"
    bucket = Settings.from_env({"ZIPEDGE_SOURCE": "s3://b/gate7"})
    assert str(bucket.staging) == "s3://b/gate7/_staging" and bucket.staging_in_source == "_staging/"
    elsewhere = Settings.from_env({"ZIPEDGE_SOURCE": "s3://b/gate7", "ZIPEDGE_STAGING": "s3://other/up"})
    assert elsewhere.staging_in_source == ""
    for source, staging in [
        ("s3://b/gate7", "s3://b/gate7/2025/01/05"),
        ("s3://b/gate7", "s3://b/gate7"),
        ("file:///srv/photos", "file:///srv/photos/2025/01/05/x"),
        ("file:///srv/photos", "s3://b/x"),
    ]:
        with pytest.raises(ConfigError):
            Settings.from_env({"ZIPEDGE_SOURCE": source, "ZIPEDGE_STAGING": staging})
    with pytest.raises(ConfigError):
        Settings.from_env({"ZIPEDGE_UPLOAD_TYPES": "image/jpeg, not a type"})
    assert Settings.from_env({"ZIPEDGE_UPLOAD_TYPES": "Image/JPEG"}).upload_types == ("image/jpeg",)


def test_the_page_allows_exactly_the_storage_origin() -> None:
    from service.web.page import CSP, csp_for

    assert csp_for("") == CSP
    bucket = Settings.from_env({"ZIPEDGE_SOURCE": "s3://b/gate7", "AWS_REGION": "eu-west-1"})
    assert csp_for(bucket.upload_origin).endswith("; connect-src 'self' https://b.s3.eu-west-1.amazonaws.com")
    local = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": "s3://b/gate7",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "ZIPEDGE_UPLOAD_ENDPOINT": "http://localhost:9000/",
        }
    )
    assert local.upload_origin == "http://localhost:9000"
