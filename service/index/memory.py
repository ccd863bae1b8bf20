"""An object index in a dict: the twin of the Redis and SQLite indexes for unit tests."""

from __future__ import annotations

from collections.abc import Sequence

from service.index.base import Known


class MemoryObjectIndex:
    def __init__(self) -> None:
        self.facts: dict[tuple[str, str], tuple[str, int]] = {}
        self.lookups = 0

    async def lookup(self, source_id: str, objects: Sequence[tuple[str, str]]) -> list[int | None]:
        self.lookups += 1
        found: list[int | None] = []
        for key, validator in objects:
            fact = self.facts.get((source_id, key))
            found.append(fact[1] if fact is not None and fact[0] == validator else None)
        return found

    async def record(self, source_id: str, facts: Sequence[Known]) -> None:
        for fact in facts:
            self.facts[source_id, fact.key] = (fact.validator, fact.crc32)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
