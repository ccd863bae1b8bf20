"""zipedge: on-demand stored ZIP downloads of many objects, streamed at once with an exact
size, built once and served from a CDN."""

from __future__ import annotations

__version__ = "0.1.0"
