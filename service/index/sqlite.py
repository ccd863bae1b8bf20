"""The object index of the embedded default: an SQLite file under ZIPEDGE_DATA_DIR
(`service/sqlite.py`: shared by the processes of one host, kept across restarts)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from service.constants import INDEX_SQLITE_BATCH, LOG_INTERVAL_S
from service.exceptions import DependencyUnavailable
from service.index.base import Known
from service.sqlite import SqliteFile

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
        self._file = SqliteFile(path, schema=[_SCHEMA], name="index")
        self._run = self._file.run
        self._logged_at = 0.0

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
        await self._file.aclose()

    def _failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            self._logged_at = now
            logger.warning(
                "could not %s the object index %s (%s): CRCs unknown meanwhile", what, self.path, exc
            )
