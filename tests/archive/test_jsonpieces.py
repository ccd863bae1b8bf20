"""Large JSON arrays in pieces: byte for byte what `json` gives, and the same errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.archive import jsonpieces
from service.constants import JSON_PIECE_ITEMS
from service.web.bodies import nesting

COMPACT: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":")}


@pytest.mark.parametrize("count", [0, 1, JSON_PIECE_ITEMS - 1, JSON_PIECE_ITEMS, JSON_PIECE_ITEMS + 1, 2500])
def test_pieces_join_to_what_json_dumps_gives(count: int) -> None:
    items = [
        [f"é/{i}.jpg", "key", f'a"\\{i}', i, "e", 1_736_000_000, None if i % 2 else i] for i in range(count)
    ]
    doc = {"format": 1, "source": "s3://b/ü"}
    pieces = list(jsonpieces.dumps_pieces(doc, "entries", iter(items)))
    assert "".join(pieces) == json.dumps({**doc, "entries": items}, **COMPACT)
    assert len(pieces) == 4 + -(-count // JSON_PIECE_ITEMS)  # head, [, one per piece, ], }


def test_the_array_key_must_be_new() -> None:
    with pytest.raises(ValueError):
        list(jsonpieces.dumps_pieces({"entries": 1}, "entries", []))


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "a.zip", "entries": [{"key": "2025/01/01/a.jpg"}, {"url": "https://x/y", "name": "é"}]}',
        ' \n[ [1, [2, [3]]] , {"a" : {"b": [true, null, 1.5e3]}} ]\t',
        "[]",
        "{}",
        '"just a string"',
        "42",
        '{"a": 1, "a": 2}',
    ],
)
def test_loads_is_json_loads(text: str) -> None:
    for blob in (text.encode(), text.encode("utf-16"), text):
        assert jsonpieces.loads(blob) == json.loads(blob)
    assert jsonpieces.depth(json.loads(text)) == nesting(text.encode())


@pytest.mark.parametrize(
    "text", ["", "[", "[1,]", "[1 2]", '{"a" 1}', '{"a": 1,}', "{1: 2}", '{"a": 1} x', "\ufeff[]", "[1]]"]
)
def test_loads_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsonpieces.loads(text)
