"""The object index of the embedded default: an SQLite file under ZIPEDGE_DATA_DIR.

SQLite in WAL mode is safe for several service processes on one host (`zipedge serve
--workers N`) and survives restarts. Every query runs on one dedicated thread holding the
one connection (sqlite3 connections must stay on their thread), so the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from service.constants import INDEX_SQLITE_BATCH, INDEX_SQLITE_BUSY_MS, LOG_INTERVAL_S
from service.exceptions import DependencyUnavailable
from service.index.base import Known

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS crc (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    validator TEXT NOT NULL,
    crc INTEGER NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID
"""


class SqliteObjectIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zipedge-index")
        self._db: sqlite3.Connection | None = None
        self._logged_at = 0.0

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=INDEX_SQLITE_BUSY_MS / 1000, check_same_thread=True)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable enough, and fast
            db.execute(_SCHEMA)
            db.commit()
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: work(self._connect()))

    async def lookup(self, source_id: str, objects: Sequence[tuple[str, str]]) -> list[int | None]:
        if not objects:
            return []

        def query(db: sqlite3.Connection) -> dict[str, tuple[str, int]]:
            keys = sorted({key for key, _ in objects})
            found: dict[str, tuple[str, int]] = {}
            for start in range(0, len(keys), INDEX_SQLITE_BATCH):
                batch = keys[start : start + INDEX_SQLITE_BATCH]
                marks = ",".join("?" * len(batch))
                rows = db.execute(
                    f"SELECT key, validator, crc FROM crc WHERE source = ? AND key IN ({marks})",
                    [source_id, *batch],
                )
                found.update((key, (validator, crc)) for key, validator, crc in rows)
            return found

        try:
            found = await self._run(query)
        except sqlite3.Error as exc:
            self._failed("look up", exc)
            return [None] * len(objects)
        answers: list[int | None] = []
        for key, validator in objects:
            fact = found.get(key)
            answers.append(fact[1] if fact is not None and fact[0] == validator else None)
        return answers

    async def record(self, source_id: str, facts: Sequence[Known]) -> None:
        if not facts:
            return

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT OR REPLACE INTO crc (source, key, validator, crc) VALUES (?, ?, ?, ?)",
                    [(source_id, f.key, f.validator, f.crc32) for f in facts],
                )

        try:
            await self._run(write)
        except sqlite3.Error as exc:
            self._failed("record in", exc)

    async def check(self) -> None:
        try:
            await self._run(lambda db: db.execute("SELECT 1").fetchone())
        except (sqlite3.Error, OSError) as exc:
            raise DependencyUnavailable(f"object index {self.path}: {exc}") from exc

    async def aclose(self) -> None:
        def close(_: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._db is not None:
            await self._run(close)
        self._thread.shutdown(wait=True)

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            self._logged_at = now
            logger.warning(
                "could not %s the object index %s (%s): CRCs unknown meanwhile", what, self.path, exc
            )
