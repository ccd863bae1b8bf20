"""Date-range selections: `?from=YYYY-MM-DD&to=YYYY-MM-DD`, UTC days, both inclusive.

The source root is partitioned by UTC day (`YYYY/MM/DD/<file>`), so a range
resolves to one key prefix per day, listed concurrently by the resolver.

Pure logic: standard library only, no IO.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import date, timedelta

from service.exceptions import InvalidParameter

__all__ = ["DateRange", "parse_date_range"]

# ASCII digits only: `\d` would also accept "٢٠٢٥", and `$` a trailing newline.
_ISO_DAY = re.compile("[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class DateRange:
    """UTC days `start` to `end`, both inclusive (`start <= end`)."""

    start: date
    end: date

    def __post_init__(self) -> None:
        # parse_date_range reports this to callers as a 400; here it is a programming error.
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")

    def __len__(self) -> int:
        """Number of days in the range."""
        return (self.end - self.start).days + 1

    def days(self) -> list[date]:
        """Every day of the range, in order."""
        return [self.start + timedelta(days=i) for i in range(len(self))]

    def prefixes(self) -> tuple[str, ...]:
        """The source key prefix of every day, in order: "2025/01/01/", ..."""
        return _prefixes(self.start, self.end)

    def filename(self) -> str:
        """Download name: "photos-2025-01-01_2025-01-05.zip", or "photos-2025-01-01.zip"
        for a single day."""
        if self.start == self.end:
            return f"photos-{self.start.isoformat()}.zip"
        return f"photos-{self.start.isoformat()}_{self.end.isoformat()}.zip"


# Ranges repeat (every click on a link), and each is up to a few hundred strings.
@functools.lru_cache(maxsize=1024)
def _prefixes(start: date, end: date) -> tuple[str, ...]:
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    # Not strftime("%Y"): glibc does not zero-pad years before 1000.
    return tuple(f"{day.year:04d}/{day.month:02d}/{day.day:02d}/" for day in days)


def parse_date_range(from_: str | None, to: str | None, *, max_days: int) -> DateRange:
    """Validate the `from` and `to` query parameters; both are required, strictly
    `YYYY-MM-DD`, `from <= to`, and the range at most `max_days` days long (inclusive).
    Raises `InvalidParameter` with a message fit for the caller."""
    if max_days < 1:
        raise ValueError(f"max_days must be at least 1, not {max_days}")
    start = _parse_day("from", from_)
    end = _parse_day("to", to)
    if start > end:
        raise InvalidParameter(f"'from' ({start}) is after 'to' ({end})")
    days = (end - start).days + 1
    if days > max_days:
        raise InvalidParameter(
            f"the range {start} to {end} spans {days} days; at most {max_days} days are allowed"
        )
    return DateRange(start, end)


def _parse_day(param: str, value: str | None) -> date:
    if value is None or value == "":
        raise InvalidParameter(f"'{param}' is required: a UTC day as YYYY-MM-DD")
    if not _ISO_DAY.fullmatch(value):
        raise InvalidParameter(f"'{param}' must be a day written YYYY-MM-DD, got {value[:40]!r}")
    try:
        return date(int(value[0:4]), int(value[5:7]), int(value[8:10]))
    except ValueError:
        raise InvalidParameter(f"'{param}' is not a calendar day: {value!r}") from None
