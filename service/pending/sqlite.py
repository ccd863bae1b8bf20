"""Pending uploads of the embedded default: an SQLite file under ZIPEDGE_DATA_DIR.

An `SqliteFile` (`service/sqlite.py`): several processes on one host share it, and the
event loop never waits on the disk.
Leases and claims are single UPDATE statements: SQLite serialises writers, so exactly one
caller sees its row change.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from service.exceptions import DependencyUnavailable
from service.pending.base import PendingUpload
from service.sqlite import SqliteFile

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS upload (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    record TEXT NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    claimed INTEGER NOT NULL DEFAULT 0
)
"""
_AGE_INDEX = "CREATE INDEX IF NOT EXISTS upload_age ON upload (claimed, created_at)"


class SqlitePendingStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, schema=[_SCHEMA, _AGE_INDEX], name="uploads", autocommit=True)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._file.run(work)
        except sqlite3.Error as exc:
            raise DependencyUnavailable(f"upload records {self.path}: {exc}") from exc

    async def put(self, record: PendingUpload) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO upload (id, created_at, record) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                (record.id, record.created_at, record.to_json()),
            )
        )

    async def get(self, upload_id: str) -> PendingUpload | None:
        row = await self._run(
            lambda db: db.execute("SELECT record FROM upload WHERE id = ?", (upload_id,)).fetchone()
        )
        return PendingUpload.from_json(row[0]) if row else None

    async def delete(self, upload_id: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM upload WHERE id = ?", (upload_id,)))

    async def lease(self, upload_id: str, ttl_s: float) -> bool:
        now = time.time()
        cursor = await self._run(
            lambda db: db.execute(
                "UPDATE upload SET lease_until = ? WHERE id = ? AND lease_until <= ?",
                (now + ttl_s, upload_id, now),
            )
        )
        return cursor.rowcount == 1

    async def release(self, upload_id: str) -> None:
        await self._run(lambda db: db.execute("UPDATE upload SET lease_until = 0 WHERE id = ?", (upload_id,)))

    async def claim(self, older_than: float, limit: int) -> Sequence[PendingUpload]:
        def work(db: sqlite3.Connection) -> list[PendingUpload]:
            rows = db.execute(
                "SELECT id FROM upload WHERE claimed = 0 AND created_at < ? ORDER BY created_at LIMIT ?",
                (older_than, limit),
            ).fetchall()
            claimed = []
            for (upload_id,) in rows:
                taken = db.execute(
                    "UPDATE upload SET claimed = 1 WHERE id = ? AND claimed = 0 RETURNING record",
                    (upload_id,),
                ).fetchone()
                if taken is not None:  # another process's janitor may have been first
                    claimed.append(PendingUpload.from_json(taken[0]))
            return claimed

        return await self._run(work)

    async def check(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._file.aclose()
