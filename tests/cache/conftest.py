from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.stack.redis import RedisServer


@pytest.fixture(scope="session")
def cache_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
