"""Readiness: every dependency probed at once, the whole answer within a deadline.

A dependency that hangs (a frozen S3, a blackholed Redis) is reported as not answering
in time instead of holding /readyz (and the load balancer asking it) past its timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from service.exceptions import ZipedgeError
from service.metrics import DEPENDENCY_UP, READY

Probe = Callable[[], Awaitable[None]]


async def probe_all(probes: Mapping[str, Probe], *, deadline_s: float) -> dict[str, str]:
    """`{name: "ok" | why not}` for every probe, answered within `deadline_s`."""

    async def one(probe: Probe) -> str:
        try:
            await probe()
        except ZipedgeError as exc:
            return exc.message
        except Exception as exc:  # any failure of a probe means "not ready"
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    tasks = {name: asyncio.create_task(one(probe)) for name, probe in probes.items()}
    done, pending = await asyncio.wait(tasks.values(), timeout=deadline_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results = {
        name: task.result() if task in done else f"no answer within {deadline_s:g} s"
        for name, task in tasks.items()
    }
    for name, result in results.items():
        DEPENDENCY_UP.labels(name).set(1 if result == "ok" else 0)
    READY.set(1 if all(result == "ok" for result in results.values()) else 0)
    return results
