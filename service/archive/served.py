"""Which layout a selection was served as, and whether another one was lately.

The same photos get a new layout (and `ETag`) once their CRCs are known. A client that
resumes without naming the bytes it holds (no `If-Range`) can be given a part only while
the selection has had one layout: `ServedLayout.alone`. The manifest stores keep these
records (`service/manifests.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.archive.manifest import is_archive_id
from service.constants import SERVED_LAYOUT_TTL_S


@dataclass(frozen=True, slots=True)
class ServedLayout:
    """The archive id a selection was last served as, and when (epoch seconds) it last
    became a different one: None when no other layout was served while this record lived."""

    archive_id: str
    switched_at: float | None = None

    def alone(self, now: float) -> bool:
        """No other layout of the selection was handed out lately, so a client resuming
        without saying which bytes it holds (no If-Range) can only hold this one."""
        return self.switched_at is None or now - self.switched_at > SERVED_LAYOUT_TTL_S

    def encode(self) -> str:
        return self.archive_id if self.switched_at is None else f"{self.archive_id} {self.switched_at:.3f}"

    @classmethod
    def decode(cls, text: str) -> ServedLayout | None:
        archive_id, _, switched = text.strip().partition(" ")
        if not is_archive_id(archive_id):
            return None
        try:
            return cls(archive_id, float(switched) if switched else None)
        except ValueError:
            return cls(archive_id)

    def after(self, archive_id: str, now: float) -> ServedLayout:
        """The record once `archive_id` is served: a switch when it is another layout."""
        return ServedLayout(archive_id, now if archive_id != self.archive_id else self.switched_at)
