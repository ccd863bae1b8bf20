"""Pending uploads in Redis, shared by every service, worker and janitor process.

`zipedge:upload:<id>` holds the record (JSON), expiring by itself a while after the grace
period; `zipedge:uploads:age` is a sorted set of ids by creation time, the janitor's
index; `zipedge:upload:<id>:lease` is a complete in progress (SET NX with a TTL). A claim
is a ZREM: Redis answers 1 to exactly one of any number of concurrent callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from service.constants import INDEX_REDIS_OP_TIMEOUT_S
from service.exceptions import DependencyUnavailable
from service.pending.base import PendingUpload

KEY_PREFIX = "zipedge:upload:"
AGE_KEY = "zipedge:uploads:age"
ERRORS = (RedisError, OSError)


def _record_key(upload_id: str) -> str:
    return f"{KEY_PREFIX}{upload_id}"


def _lease_key(upload_id: str) -> str:
    return f"{KEY_PREFIX}{upload_id}:lease"


class RedisPendingStore:
    def __init__(self, redis: aioredis.Redis, *, record_ttl_s: int) -> None:
        self._redis = redis
        self._ttl = record_ttl_s

    async def put(self, record: PendingUpload) -> None:
        try:
            async with asyncio.timeout(INDEX_REDIS_OP_TIMEOUT_S * 2):
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.set(_record_key(record.id), record.to_json(), ex=self._ttl)
                    pipe.zadd(AGE_KEY, {record.id: record.created_at}, nx=True)
                    await pipe.execute()
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc

    async def get(self, upload_id: str) -> PendingUpload | None:
        try:
            async with asyncio.timeout(INDEX_REDIS_OP_TIMEOUT_S * 2):
                raw = await self._redis.get(_record_key(upload_id))
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc
        return PendingUpload.from_json(raw) if raw is not None else None

    async def delete(self, upload_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(_record_key(upload_id), _lease_key(upload_id))
                pipe.zrem(AGE_KEY, upload_id)
                await pipe.execute()
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc

    async def lease(self, upload_id: str, ttl_s: float) -> bool:
        try:
            taken = await self._redis.set(_lease_key(upload_id), b"1", nx=True, px=int(ttl_s * 1000))
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc
        return bool(taken)

    async def release(self, upload_id: str) -> None:
        try:
            await self._redis.delete(_lease_key(upload_id))
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc

    async def claim(self, older_than: float, limit: int) -> Sequence[PendingUpload]:
        try:
            ids = await self._redis.zrangebyscore(AGE_KEY, "-inf", f"({older_than}", start=0, num=limit)
            claimed: list[PendingUpload] = []
            for raw_id in ids:
                upload_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                if await self._redis.zrem(AGE_KEY, upload_id) != 1:
                    continue  # another janitor took it first
                record = await self.get(upload_id)
                if record is not None:
                    claimed.append(record)
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc
        return claimed

    async def check(self) -> None:
        try:
            await self._redis.ping()
        except ERRORS as exc:
            raise DependencyUnavailable(f"upload records (redis): {exc}") from exc

    async def aclose(self) -> None:
        return None  # the Redis client belongs to the runtime
