"""Passes over many entries run in a worker thread (`off_loop`), with the cyclic garbage
collector kept from full collections meanwhile (`quiet_collector`).

The thread holds the GIL only in slices (the switch interval), so the loop keeps serving
while a 200,000-entry manifest is built, as long as no single C call in it runs long:
hence `service/archive/jsonpieces.py`.

A 200,000-entry build makes a few million objects that outlive the young generations. The
collector answers with full collections, each a pass over every tracked object in the
process while it holds the GIL (measured: up to ~0.5 s on a loaded 2-core box), and a
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

import asyncio
import contextlib
import contextvars
import gc
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.constants import GC_HELD_OFF_THRESHOLD, MANIFEST_INLINE_ENTRIES, OFF_LOOP_THREADS

T = TypeVar("T")

#: The threads of these passes: few, because every thread that wants the GIL competes
#: with the loop for it (the GIL goes to any waiter, not the loop first) and, the GIL
#: being one, more threads would not make the passes faster.
_passes = ThreadPoolExecutor(max_workers=OFF_LOOP_THREADS, thread_name_prefix="zipedge-passes")

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


async def off_loop(entries: int, work: Callable[[], T]) -> T:
    """`work()`, by `in_worker` when it is a pass over more than `MANIFEST_INLINE_ENTRIES`
    entries (~1 us or more each: 200,000 of them would hold the loop for a fifth of a
    second), else right here."""
    if entries <= MANIFEST_INLINE_ENTRIES:
        return work()
    return await in_worker(work)


async def in_worker(work: Callable[[], T]) -> T:
    """`work()` in one of the passes' threads, under `quiet_collector` so that the millions
    of objects it may make cannot set off a full collection that stops every thread."""

    def run() -> T:
        with quiet_collector():
            return work()

    context = contextvars.copy_context()  # as asyncio.to_thread: the span and the request id
    return await asyncio.get_running_loop().run_in_executor(_passes, context.run, run)
