"""glibc's allocator, told to keep the memory a stream frees for the next chunk.

A stream allocates and frees a few hundred KiB per photo (the bytes received, the pieces
sent). glibc serves such sizes from fresh mappings or trims the top of its heap as soon
as they are freed, so the next chunk lands on new pages: a page fault and a zeroed page
every 4 KiB, which profiled at ~20 % of the service's CPU (memmove into fresh pages, the
faults, zeroing, unmapping). With a higher mmap threshold and trim threshold the freed
memory is reused instead; the process keeps its high-water mark, which the prefetch
budget bounds per stream.

Only where the C library is glibc (`mallopt` exists); a no-op elsewhere (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from service.constants import MALLOC_MMAP_THRESHOLD_BYTES, MALLOC_TRIM_THRESHOLD_BYTES

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; whether it could."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES)
    )
    if not done:
        logger.info("mallopt refused the thresholds: the allocator keeps its defaults")
    return done
