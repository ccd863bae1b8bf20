"""Date-range selections: strict parsing of `from`/`to` and the day prefixes they list."""

from __future__ import annotations

import re
from datetime import date

import pytest

from service.archive.selection import DateRange, parse_date_range
from service.exceptions import InvalidParameter

D = date


@pytest.mark.parametrize(
    ("from_", "to", "max_days", "expected"),
    [
        ("2025-01-01", "2025-01-05", 366, DateRange(D(2025, 1, 1), D(2025, 1, 5))),
        ("2025-01-05", "2025-01-05", 1, DateRange(D(2025, 1, 5), D(2025, 1, 5))),
        ("2024-12-30", "2025-01-02", 4, DateRange(D(2024, 12, 30), D(2025, 1, 2))),  # exactly max
        ("2024-02-29", "2024-02-29", 366, DateRange(D(2024, 2, 29), D(2024, 2, 29))),  # leap day
        ("2024-01-01", "2024-12-31", 366, DateRange(D(2024, 1, 1), D(2024, 12, 31))),  # leap year
        ("0001-01-01", "0001-01-01", 1, DateRange(D(1, 1, 1), D(1, 1, 1))),
        ("9999-12-31", "9999-12-31", 1, DateRange(D(9999, 12, 31), D(9999, 12, 31))),
    ],
)
def test_parse_accepts(from_: str, to: str, max_days: int, expected: DateRange) -> None:
    assert parse_date_range(from_, to, max_days=max_days) == expected


@pytest.mark.parametrize(
    ("from_", "to", "max_days", "message"),
    [
        (None, "2025-01-05", 366, "'from' is required"),
        ("2025-01-05", None, 366, "'to' is required"),
        (None, None, 366, "'from' is required"),
        ("", "2025-01-05", 366, "'from' is required"),
        ("2025-01-05", "", 366, "'to' is required"),
        ("2025-1-5", "2025-01-05", 366, "'from' must be a day written YYYY-MM-DD"),
        ("2025-01-05T00:00", "2025-01-05", 366, "'from' must be"),
        ("2025-01-05", "2025-01-05T00:00:00Z", 366, "'to' must be"),
        (" 2025-01-05", "2025-01-05", 366, "'from' must be"),
        ("2025-01-05 ", "2025-01-05", 366, "'from' must be"),
        ("2025-01-05\n", "2025-01-05", 366, "'from' must be"),
        ("20250105", "2025-01-05", 366, "'from' must be"),
        ("2025/01/05", "2025-01-05", 366, "'from' must be"),
        ("+2025-01-05", "2025-01-05", 366, "'from' must be"),
        ("2025-01-05", "12025-01-05", 366, "'to' must be"),
        ("\u0662\u0660\u0662\u0665-01-05", "2025-01-05", 366, "'from' must be"),  # Arabic-Indic digits
        ("2025-０1-05", "2025-01-05", 366, "'from' must be"),  # fullwidth digit
        ("yesterday", "2025-01-05", 366, "'from' must be"),
        ("2025-02-30", "2025-03-01", 366, "'from' is not a calendar day"),
        ("2025-02-29", "2025-03-01", 366, "not a calendar day"),  # not a leap year
        ("2025-13-01", "2025-12-01", 366, "not a calendar day"),
        ("2025-00-10", "2025-01-01", 366, "not a calendar day"),
        ("2025-01-00", "2025-01-01", 366, "not a calendar day"),
        ("0000-01-01", "2025-01-01", 366, "not a calendar day"),
        ("2025-01-06", "2025-01-05", 366, "'from' (2025-01-06) is after 'to' (2025-01-05)"),
        ("2025-01-01", "2025-01-05", 4, "spans 5 days; at most 4"),
        ("2025-01-01", "2026-01-02", 366, "spans 367 days; at most 366"),
        ("2025-01-01", "2025-01-02", 1, "spans 2 days; at most 1"),
    ],
)
def test_parse_rejects(from_: str | None, to: str | None, max_days: int, message: str) -> None:
    with pytest.raises(InvalidParameter, match=re.escape(message)) as caught:
        parse_date_range(from_, to, max_days=max_days)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_parameter"


def test_long_garbage_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_date_range("x" * 10_000, "2025-01-01", max_days=366)
    assert len(caught.value.message) < 200


@pytest.mark.parametrize("max_days", [0, -1])
def test_max_days_must_be_positive(max_days: int) -> None:
    with pytest.raises(ValueError, match="max_days"):
        parse_date_range("2025-01-01", "2025-01-01", max_days=max_days)


@pytest.mark.parametrize(
    ("start", "end", "days", "prefixes", "filename"),
    [
        (D(2025, 1, 5), D(2025, 1, 5), [D(2025, 1, 5)], ["2025/01/05/"], "photos-2025-01-05.zip"),
        (
            D(2025, 1, 1),
            D(2025, 1, 3),
            [D(2025, 1, 1), D(2025, 1, 2), D(2025, 1, 3)],
            ["2025/01/01/", "2025/01/02/", "2025/01/03/"],
            "photos-2025-01-01_2025-01-03.zip",
        ),
        (
            D(2024, 12, 31),
            D(2025, 1, 1),
            [D(2024, 12, 31), D(2025, 1, 1)],
            ["2024/12/31/", "2025/01/01/"],
            "photos-2024-12-31_2025-01-01.zip",
        ),
        (
            D(2024, 2, 28),
            D(2024, 3, 1),
            [D(2024, 2, 28), D(2024, 2, 29), D(2024, 3, 1)],
            ["2024/02/28/", "2024/02/29/", "2024/03/01/"],
            "photos-2024-02-28_2024-03-01.zip",
        ),
        (D(999, 1, 1), D(999, 1, 1), [D(999, 1, 1)], ["0999/01/01/"], "photos-0999-01-01.zip"),
    ],
)
def test_date_range(start: date, end: date, days: list[date], prefixes: list[str], filename: str) -> None:
    selection = DateRange(start, end)
    assert selection.days() == days
    assert len(selection) == len(days)
    assert selection.prefixes() == tuple(prefixes)
    assert selection.filename() == filename


def test_full_year_has_a_prefix_per_day() -> None:
    selection = parse_date_range("2024-01-01", "2024-12-31", max_days=366)
    prefixes = selection.prefixes()
    assert len(prefixes) == 366
    assert len(set(prefixes)) == 366
    assert list(prefixes) == sorted(prefixes)


def test_date_range_is_a_hashable_value() -> None:
    assert {DateRange(D(2025, 1, 1), D(2025, 1, 2)), DateRange(D(2025, 1, 1), D(2025, 1, 2))} == {
        DateRange(D(2025, 1, 1), D(2025, 1, 2))
    }


def test_date_range_rejects_reversed_bounds() -> None:
    with pytest.raises(ValueError, match="after"):
        DateRange(D(2025, 1, 2), D(2025, 1, 1))
