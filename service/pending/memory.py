"""Pending uploads in a dict: the twin for unit tests (one process only)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from service.pending.base import PendingUpload


class MemoryPendingStore:
    def __init__(self) -> None:
        self.records: dict[str, PendingUpload] = {}
        self._ages: dict[str, float] = {}
        self._leases: dict[str, float] = {}

    async def put(self, record: PendingUpload) -> None:
        self.records[record.id] = record
        self._ages.setdefault(record.id, record.created_at)

    async def get(self, upload_id: str) -> PendingUpload | None:
        return self.records.get(upload_id)

    async def delete(self, upload_id: str) -> None:
        self.records.pop(upload_id, None)
        self._ages.pop(upload_id, None)
        self._leases.pop(upload_id, None)

    async def lease(self, upload_id: str, ttl_s: float) -> bool:
        now = time.monotonic()
        if self._leases.get(upload_id, 0.0) > now:
            return False
        self._leases[upload_id] = now + ttl_s
        return True

    async def release(self, upload_id: str) -> None:
        self._leases.pop(upload_id, None)

    async def claim(self, older_than: float, limit: int) -> Sequence[PendingUpload]:
        old = sorted((age, i) for i, age in self._ages.items() if age < older_than)[:limit]
        claimed = []
        for _, upload_id in old:
            del self._ages[upload_id]
            if upload_id in self.records:
                claimed.append(self.records[upload_id])
        return claimed

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
