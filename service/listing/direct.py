"""What the resolver needs of day listings, and the uncached implementation.

The folder source (the embedded default) is listed directly on every request: listing a
folder is cheap, and photos dropped in by hand must show up at once. S3 sources go through
`DayListingCache`, which offers the same `list_days`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date
from typing import Protocol

from service.constants import LIST_CONCURRENCY
from service.sources.base import ObjectInfo, Source


class Listings(Protocol):
    #: True when the same day gives the identical tuple until it changes (memo-friendly).
    stable: bool

    async def list_days(self, prefixes: Sequence[str]) -> list[tuple[ObjectInfo, ...]]:
        """Every prefix's objects, in order; the first source error is raised."""
        ...

    async def invalidate(self, key: str) -> None:
        """An object under `key` was found changed or gone: forget what was listed."""
        ...

    async def bump(self, day: date) -> int:
        """A writer changed this day: every process must re-list it."""
        ...

    async def aclose(self) -> None: ...


class DirectListings:
    """Lists each day from the source, `LIST_CONCURRENCY` at a time; remembers nothing."""

    stable = False

    def __init__(self, source: Source) -> None:
        self.source = source

    async def list_days(self, prefixes: Sequence[str]) -> list[tuple[ObjectInfo, ...]]:
        semaphore = asyncio.Semaphore(LIST_CONCURRENCY)

        async def one(prefix: str) -> tuple[ObjectInfo, ...]:
            async with semaphore:
                return tuple(await self.source.list(prefix))

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(prefix)) for prefix in prefixes]
        return [task.result() for task in tasks]

    async def invalidate(self, key: str) -> None:
        return None  # nothing kept

    async def bump(self, day: date) -> int:
        return 0

    async def aclose(self) -> None:
        return None
