"""pytest fixtures for a real Debian `redis-server` (load with `pytest_plugins`).

`redis_server` is one server per test session on a free loopback port, in a temporary
directory, stopped at the end. `redis_client` is a client per test (pytest-asyncio gives
each test its own event loop, and a client's connections belong to one loop) on a flushed
server, closed after the test. `private_redis_server` and `private_redis_client` are a
server and client of one test's own, for tests that stop the server.

`fast_redis_client` builds a client the way the service should: short socket timeouts
and one retry, so a Redis that goes away costs a request milliseconds, not redis-py's
default 5 s timeouts times 10 retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.stack.redis import RedisServer


def fast_redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 1),
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = fast_redis_client(redis_server.url)
    try:
        await client.flushall()
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own: stopping it leaves the session's one alone."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def private_redis_client(private_redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = fast_redis_client(private_redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()
