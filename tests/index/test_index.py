"""The object index's one contract, held by all three implementations: the in-memory twin,
SQLite (the embedded default) and a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import asyncio as aioredis

from service.index import Known, ObjectIndex, group_of
from service.index.memory import MemoryObjectIndex
from service.index.redis import RedisObjectIndex
from service.index.sqlite import SqliteObjectIndex
from service.stack.ports import free_port
from service.stack.redis import RedisServer
from tests.redis_fixtures import fast_redis_client

SOURCE = "s3://photos/gate7"


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectIndex]:
    if request.param == "memory":
        yield MemoryObjectIndex()
    elif request.param == "sqlite":
        found = SqliteObjectIndex(tmp_path / "index.sqlite3")
        yield found
        await found.aclose()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        client = aioredis.Redis.from_url(server.url)
        await client.flushall()
        yield RedisObjectIndex(client)
        await client.aclose()


def test_groups_are_days_or_misc() -> None:
    assert group_of("2025/01/05/MH12.jpg") == "2025-01-05"
    assert group_of("2025/01/05/deep/er/x.jpg") == "2025-01-05"
    assert group_of("reports/x.jpg") == "misc"
    assert group_of("https://res.cloudinary.com/x.jpg") == "misc"


async def test_learned_crcs_are_found_under_their_validator_only(index: ObjectIndex) -> None:
    objects = [("2025/01/05/a.jpg", "etag-a"), ("2025/01/06/b.jpg", "etag-b"), ("other/c.jpg", "etag-c")]
    assert await index.lookup(SOURCE, objects) == [None, None, None]
    await index.record(
        SOURCE,
        [Known("2025/01/05/a.jpg", "etag-a", 0xDEADBEEF), Known("other/c.jpg", "etag-c", 0)],
    )
    assert await index.lookup(SOURCE, objects) == [0xDEADBEEF, None, 0]
    # The object changed (a new ETag): its old CRC is never used.
    assert await index.lookup(SOURCE, [("2025/01/05/a.jpg", "etag-a2")]) == [None]
    # Another source knows nothing of this one's objects.
    assert await index.lookup("s3://elsewhere", objects) == [None, None, None]
    # A newer fact replaces the older one.
    await index.record(SOURCE, [Known("2025/01/05/a.jpg", "etag-a2", 7)])
    assert await index.lookup(SOURCE, [("2025/01/05/a.jpg", "etag-a2"), objects[0]]) == [7, None]
    assert await index.lookup(SOURCE, []) == []
    await index.check()


async def test_a_day_of_objects_in_one_batch(index: ObjectIndex) -> None:
    facts = [Known(f"2025/01/05/{i:05d}.jpg", f"e{i}", i) for i in range(3000)]
    await index.record(SOURCE, facts)
    found = await index.lookup(SOURCE, [(f.key, f.validator) for f in reversed(facts)])
    assert found == [f.crc32 for f in reversed(facts)]


async def test_sqlite_is_shared_by_processes_on_one_host(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    one, two = SqliteObjectIndex(path), SqliteObjectIndex(path)
    try:
        await one.record(SOURCE, [Known("2025/01/05/a.jpg", "e", 42)])
        assert await two.lookup(SOURCE, [("2025/01/05/a.jpg", "e")]) == [42]
    finally:
        await one.aclose()
        await two.aclose()


async def test_an_unreachable_redis_knows_nothing_and_raises_nothing() -> None:
    client = fast_redis_client(f"redis://127.0.0.1:{free_port()}")
    index = RedisObjectIndex(client)
    try:
        assert await index.lookup(SOURCE, [("2025/01/05/a.jpg", "e")]) == [None]
        await index.record(SOURCE, [Known("2025/01/05/a.jpg", "e", 1)])  # logged, not raised
    finally:
        await client.aclose()
