"""Day listings: the objects under each `YYYY/MM/DD/` prefix of the source, cached for S3
(`cache.py`, over `versions.py`, `tiers.py` and `keys.py`) and direct for a folder
(`direct.py`)."""

from service.listing.cache import DayListingCache
from service.listing.direct import DirectListings, Listings, learn
from service.listing.keys import day_of_key, parse_day_prefix
from service.listing.versions import bump_day

__all__ = [
    "DayListingCache",
    "DirectListings",
    "Listings",
    "bump_day",
    "day_of_key",
    "learn",
    "parse_day_prefix",
]
