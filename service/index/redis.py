"""The object index in Redis, shared by every process: one hash per (source, group).

`zipedge:crc:<source hash>:<group>` maps a key to `<crc hex>:<validator>`. A date range's
lookup is one pipelined HMGET per day; a record is one pipelined HSET per group. Hashes
live `INDEX_TTL_S` after their last write (CRCs are cheap to keep and costly to learn).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from itertools import groupby
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.constants import INDEX_REDIS_OP_TIMEOUT_S, INDEX_TTL_S, LOG_INTERVAL_S
from service.exceptions import DependencyUnavailable
from service.index.base import Known, group_of

logger = logging.getLogger(__name__)

KEY_PREFIX = "zipedge:crc:"


def _hash_key(source_id: str, group: str) -> str:
    source = hashlib.sha256(source_id.encode()).hexdigest()[:16]
    return f"{KEY_PREFIX}{source}:{group}"


def _parse(value: Any, validator: str) -> int | None:
    if not isinstance(value, bytes):
        return None
    crc, _, stored = value.decode("utf-8", "replace").partition(":")
    if stored != validator:
        return None
    try:
        return int(crc, 16)
    except ValueError:
        return None


class RedisObjectIndex:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._logged_at = 0.0

    async def lookup(self, source_id: str, objects: Sequence[tuple[str, str]]) -> list[int | None]:
        if not objects:
            return []
        order = sorted(range(len(objects)), key=lambda i: group_of(objects[i][0]))
        groups = [(g, list(items)) for g, items in groupby(order, key=lambda i: group_of(objects[i][0]))]
        try:
            async with asyncio.timeout(INDEX_REDIS_OP_TIMEOUT_S):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for group, items in groups:
                        pipe.hmget(_hash_key(source_id, group), [objects[i][0] for i in items])
                    answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("look up", exc)
            return [None] * len(objects)
        found: list[int | None] = [None] * len(objects)
        for (_, items), values in zip(groups, answers, strict=True):
            for i, value in zip(items, values, strict=True):
                found[i] = _parse(value, objects[i][1])
        return found

    async def record(self, source_id: str, facts: Sequence[Known]) -> None:
        if not facts:
            return
        by_group: dict[str, dict[Any, Any]] = {}  # redis-py types the mapping invariantly
        for fact in facts:
            by_group.setdefault(group_of(fact.key), {})[fact.key] = f"{fact.crc32:08x}:{fact.validator}"
        try:
            async with asyncio.timeout(INDEX_REDIS_OP_TIMEOUT_S):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for group, mapping in by_group.items():
                        key = _hash_key(source_id, group)
                        pipe.hset(key, mapping=mapping)
                        pipe.expire(key, INDEX_TTL_S)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("record in", exc)

    async def check(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable(f"object index (redis): {exc}") from exc

    async def aclose(self) -> None:
        return None  # the Redis client belongs to the runtime

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            self._logged_at = now
            logger.warning("could not %s the object index (%s): CRCs unknown meanwhile", what, exc)
