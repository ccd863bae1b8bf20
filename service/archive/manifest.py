"""Manifests: the ordered list of what goes into one archive, and the archive id.

An entry says where an object comes from (`kind` + `ref`), which name it gets, and what
the object was when the manifest was made (size, ETag, mtime, CRC-32 when known). The
archive id is a hash of all of that plus the format version and the source's identity:
the same selection over the same objects always gives the same id and the same bytes;
any change to an object gives a new id.

Pure: no IO. Serialised as compact JSON for the manifest store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from service.archive import jsonpieces
from service.archive.jsonpieces import dumps_pieces
from service.archive.layout import Layout, Member
from service.archive.names import assign_names
from service.constants import ARCHIVE_FORMAT_VERSION, ARCHIVE_ID_HEX_CHARS

Kind = Literal["key", "url"]

_ID_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Entry:
    """One member of an archive."""

    name: str  #: final member name (already through the name policy)
    kind: Kind  #: "key": relative to the source root; "url": an HTTP origin
    ref: str
    size: int
    etag: str
    mtime: int  #: seconds since the epoch, UTC
    crc32: int | None = None

    def canonical(self) -> list[Any]:
        return [self.name, self.kind, self.ref, self.size, self.etag, self.mtime, self.crc32]


@dataclass(frozen=True)
class Manifest:
    """An ordered, immutable archive description.

    `source` identifies the root the keys are relative to (e.g. "s3://bucket/photos"), so
    two deployments over different buckets never share ids. `filename` is the suggested
    download name; it does not change the bytes and so is not part of the id.
    """

    entries: tuple[Entry, ...]
    source: str
    filename: str = "archive.zip"
    renamed: dict[str, str] = field(default_factory=dict, compare=False)

    @cached_property
    def archive_id(self) -> str:
        """Names these exact bytes (the ETag): the objects and every CRC known in advance,
        which decides the layout (data descriptors or not)."""
        return _digest("bytes", self.source, (e.canonical() for e in self.entries))

    @cached_property
    def objects_id(self) -> str:
        """Names the objects under their names, whatever CRCs were known: learning a CRC
        changes the bytes (a new `archive_id`), not this. The cache and jobs are keyed by
        it, so an archive is built once per set of objects, not once per layout."""
        return _digest("objects", self.source, (e.canonical()[:-1] for e in self.entries))

    @cached_property
    def layout(self) -> Layout:
        return Layout([Member(e.name, e.size, e.mtime, e.crc32) for e in self.entries])

    @property
    def size(self) -> int:
        """Exact size of the archive in bytes."""
        return self.layout.size

    # Cached, like the ids: a pass over 200,000 entries is ~10 ms, and a response's headers
    # ask for them on the event loop.
    @cached_property
    def content_bytes(self) -> int:
        """Sum of the members' sizes (what has to be fetched)."""
        return sum(e.size for e in self.entries)

    @cached_property
    def last_modified(self) -> int:
        return max((e.mtime for e in self.entries), default=0)

    def to_json(self) -> bytes:
        doc = {
            "format": ARCHIVE_FORMAT_VERSION,
            "id": self.archive_id,
            "source": self.source,
            "filename": self.filename,
        }
        pieces = dumps_pieces(doc, "entries", (e.canonical() for e in self.entries))
        return "".join(pieces).encode("utf-8")

    @classmethod
    def from_json(cls, blob: bytes) -> Manifest:
        doc = jsonpieces.loads(blob)
        entries = tuple(
            Entry(name, kind, ref, size, etag, mtime, crc)
            for name, kind, ref, size, etag, mtime, crc in doc["entries"]
        )
        manifest = cls(entries=entries, source=doc["source"], filename=doc["filename"])
        if doc.get("format") != ARCHIVE_FORMAT_VERSION or manifest.archive_id != doc["id"]:
            # Written by another format version: its id would not match the bytes we make.
            raise ValueError("manifest was written by another format version")
        return manifest


def _digest(kind: str, source: str, entries: Iterable[list[Any]]) -> str:
    """The hash of the compact JSON of {format, kind, source, entries}, fed in pieces: one
    `json.dumps` of 200,000 entries held the GIL for ~100 ms (the bytes are the same)."""
    canonical = {"format": ARCHIVE_FORMAT_VERSION, "kind": kind, "source": source}
    digest = hashlib.sha256()
    for piece in dumps_pieces(canonical, "entries", entries):
        digest.update(piece.encode("utf-8"))
    return digest.hexdigest()[:ARCHIVE_ID_HEX_CHARS]


def is_archive_id(text: str) -> bool:
    return len(text) == ARCHIVE_ID_HEX_CHARS and set(text) <= _ID_CHARS


@dataclass(frozen=True, slots=True)
class Candidate:
    """An object picked for an archive, before the name policy gives it its final name."""

    kind: Kind
    ref: str
    desired_name: str
    size: int
    etag: str
    mtime: int
    crc32: int | None = None


def build_manifest(candidates: Sequence[Candidate], *, source: str, filename: str) -> Manifest:
    """Apply the name policy (safe names, case-insensitive duplicates renamed) in order."""
    desired = [c.desired_name for c in candidates]
    names = assign_names(desired)
    renamed = {d: n for d, n in zip(desired, names, strict=True) if d != n}
    entries = tuple(
        Entry(name, c.kind, c.ref, c.size, c.etag, c.mtime, c.crc32)
        for name, c in zip(names, candidates, strict=True)
    )
    return Manifest(entries=entries, source=source, filename=filename, renamed=renamed)
