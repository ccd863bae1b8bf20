"""An SQLite file for the embedded default's state (the object index, upload records):
one dedicated thread holding the one connection, since sqlite3 connections must stay on
the thread that made them, so the event loop never waits on the disk. WAL mode, so several
service processes on one host (`zipedge serve --workers N`) share the file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from service.constants import SQLITE_BUSY_MS

T = TypeVar("T")


class SqliteFile:
    def __init__(self, path: Path, *, schema: Sequence[str], name: str, autocommit: bool = False) -> None:
        self.path = path
        self._schema = schema
        self._autocommit = autocommit
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"zipedge-{name}")
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path,
                timeout=SQLITE_BUSY_MS / 1000,
                isolation_level=None if self._autocommit else "DEFERRED",
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable enough, and fast
            for statement in self._schema:
                db.execute(statement)
            db.commit()
            self._db = db
        return self._db

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the file's thread; sqlite3 errors propagate."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: work(self._connect()))

    async def aclose(self) -> None:
        def close(_: sqlite3.Connection) -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._db is not None:
            await self.run(close)
        self._thread.shutdown(wait=True)
