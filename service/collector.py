"""The cyclic garbage collector while a worker thread builds a large manifest.

A 200,000-entry build makes a few million objects that outlive the young generations. The
collector answers with full collections, each a pass over every tracked object in the
process while it holds the GIL (measured: up to ~450 ms on a loaded 2-core box), and a
collection started in the worker thread stops the event loop just the same. So while any
such build runs, full collections are held off (the young generations, where nearly all
garbage dies, are still collected), and when the last one ends everything alive is moved
to the permanent generation (`gc.freeze`, as the app does at startup): later full
collections skip the manifests that stay (the date-range memo keeps up to 200,000
entries), and each is still freed by reference counting when dropped. The price: a
reference cycle already frozen when it becomes garbage is never collected, which the
service's acyclic dataclasses rarely make.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from service.constants import GC_HELD_OFF_THRESHOLD

_lock = threading.Lock()
_builds = 0
_thresholds = gc.get_threshold()


@contextlib.contextmanager
def quiet_collector() -> Iterator[None]:
    """No full collection until the outermost of these (in any thread) ends."""
    global _builds, _thresholds
    with _lock:
        if _builds == 0:
            _thresholds = gc.get_threshold()
            young, middle, _ = _thresholds
            gc.set_threshold(young, middle, GC_HELD_OFF_THRESHOLD)
        _builds += 1
    try:
        yield
    finally:
        with _lock:
            _builds -= 1
            if _builds == 0:
                gc.freeze()
                gc.set_threshold(*_thresholds)
