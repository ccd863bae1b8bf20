"""Object sources (a date-partitioned root) and origins (absolute URLs), one adapter each."""
