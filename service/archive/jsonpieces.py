"""JSON of large arrays encoded and decoded in pieces, byte for byte what `json` gives.

The C encoder and decoder hold the GIL for a whole call: `json.dumps` of a 200,000-entry
manifest or `json.loads` of a 100,000-entry posted body is one call of tens of ms during
which no other thread runs, the event loop's included, whichever thread makes it. In
pieces of `JSON_PIECE_ITEMS` items the interpreter gets back between pieces, so a worker
thread doing this hands the GIL over at the switch interval like any Python code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from service.constants import JSON_PIECE_ITEMS, JSON_PIECES_DEPTH

_COMPACT = {"ensure_ascii": False, "separators": (",", ":")}
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def dumps_pieces(doc: dict[str, Any], key: str, items: Iterable[Any]) -> Iterator[str]:
    """The compact JSON (`separators=(",", ":")`, `ensure_ascii=False`) of `doc` with
    `items` as the value of a last key `key`, in pieces: `"".join(...)` is exactly
    `json.dumps({**doc, key: list(items)}, ...)`."""
    if key in doc:
        raise ValueError(f"{key!r} must be the last key, not one of doc's")
    head = json.dumps({**doc, key: []}, **_COMPACT)  # type: ignore[arg-type]
    yield head[: -len("[]}")]
    yield from _array_pieces(items)
    yield "}"


def _array_pieces(items: Iterable[Any]) -> Iterator[str]:
    yield "["
    remaining = iter(items)
    separator = ""
    while piece := list(islice(remaining, JSON_PIECE_ITEMS)):
        yield separator + json.dumps(piece, **_COMPACT)[1:-1]  # type: ignore[arg-type]
        separator = ","
    yield "]"


def loads(blob: bytes | str) -> Any:
    """`json.loads`, the arrays and objects of the first `JSON_PIECES_DEPTH` levels walked
    here and each value below them decoded by one C call: a posted body's entries one at a
    time. Raises `ValueError` (`json.JSONDecodeError`) as `json.loads` does."""
    if isinstance(blob, bytes | bytearray):
        text = blob.decode(json.detect_encoding(blob), "surrogatepass")
    else:
        text = blob
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    value, end = _value(text, _skip(text, 0), 0)
    end = _skip(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    assert match is not None  # it matches the empty string
    return match.end()


def _value(text: str, position: int, depth: int) -> tuple[Any, int]:
    opening = text[position : position + 1]
    if depth >= JSON_PIECES_DEPTH or opening not in ("[", "{"):
        return _DECODER.raw_decode(text, position)
    closing = "]" if opening == "[" else "}"
    position = _skip(text, position + 1)
    items: list[Any] = []
    members: dict[str, Any] = {}
    if text[position : position + 1] == closing:
        return (items if opening == "[" else members), position + 1
    while True:
        if opening == "{":
            if text[position : position + 1] != '"':
                raise json.JSONDecodeError(
                    "Expecting property name enclosed in double quotes", text, position
                )
            name, position = json.decoder.scanstring(text, position + 1)  # type: ignore[attr-defined]
            position = _skip(text, position)
            if text[position : position + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, position)
            value, position = _value(text, _skip(text, position + 1), depth + 1)
            members[name] = value
        else:
            value, position = _value(text, position, depth + 1)
            items.append(value)
        position = _skip(text, position)
        following = text[position : position + 1]
        if following == closing:
            return (items if opening == "[" else members), position + 1
        if following != ",":
            raise json.JSONDecodeError(f"Expecting ',' delimiter or {closing!r}", text, position)
        position = _skip(text, position + 1)


def depth(value: Any) -> int:
    """How deep the arrays and objects of a decoded value nest (0 for a scalar): what
    `service.web.bodies.nesting` finds in the text, found without one C pass over it."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        level += 1
        deepest = max(deepest, level)
        pending.extend((child, level) for child in item if isinstance(child, dict | list))
    return deepest
