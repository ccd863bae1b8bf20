"""The event loop of zipedge's own commands: uvloop where it is installed, the loop
uvicorn already picks for `zipedge serve`.

`zipedge worker`, `zipedge janitor` and `zipedge index` run the same object GETs and
archive writer as the service, so they run them on the same loop: on asyncio's default
selector loop every socket read and write goes through Python (`_SelectorSocketTransport`,
~10 % of a job worker's profile), uvloop does that part in C. Where uvloop is missing
(Windows, PyPy) the standard loop runs the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None (asyncio's default) where uvloop is missing."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a platform without uvloop wheels
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop `loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
