"""What an object index offers: look CRCs up in batches, record what a read learned."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

_DAY = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})/")


@dataclass(frozen=True, slots=True)
class Known:
    """One fact: the object at `key` with this `validator` has this CRC-32."""

    key: str
    validator: str
    crc32: int


def group_of(key: str) -> str:
    """Objects are kept in groups looked up together: a key's day (`2025-01-05` for
    `2025/01/05/x.jpg`, what one listing holds), or `misc` for any other key or URL."""
    match = _DAY.match(key)
    return f"{match[1]}-{match[2]}-{match[3]}" if match else "misc"


class ObjectIndex(Protocol):
    async def lookup(self, source_id: str, objects: Sequence[tuple[str, str]]) -> list[int | None]:
        """The CRC-32 of each (key, validator), None where unknown or the validator
        differs. Never raises: an index that cannot be asked knows nothing."""
        ...

    async def record(self, source_id: str, facts: Sequence[Known]) -> None:
        """Remember `facts` (later ones replace earlier ones for the same key). Never
        raises: a fact not recorded is learned again next time."""
        ...

    async def check(self) -> None:
        """`DependencyUnavailable` when the index cannot be reached (for /readyz)."""
        ...

    async def aclose(self) -> None: ...
