"""Supervision of a local stack: start components in order, print their URLs, watch
them, stop everything in reverse order on SIGINT/SIGTERM or when one dies.

What the components are is `service/stack/local.py`'s business (`LocalStack.specs()`);
this module only needs each to start, stop, say its pid and show its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol, TextIO

#: How often the supervisor looks for a component that died (seconds).
SUPERVISE_INTERVAL_S = 0.5


class Component(Protocol):
    """What the supervisor needs of a running part of the stack."""

    @property
    def pid(self) -> int | None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def log_tail(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One part of the stack: `create` builds it (after the earlier ones started),
    `url` is printed as `<name>: <url>` (None: nothing to print)."""

    name: str
    create: Callable[[], Component]
    url: Callable[[], str] | None = None
    #: Runs once the component answers (e.g. creating buckets).
    after_start: Callable[[], None] | None = None


class Stack(Protocol):
    """What the supervisor needs of a stack: where it lives, its parts, and a hint."""

    directory: Path

    def specs(self) -> list[ComponentSpec]: ...

    def hint(self) -> str: ...


def exited(pid: int) -> bool:
    """True when our child `pid` has exited, without reaping it (its Popen still can)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def supervise(build: Callable[[], Stack], *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Start the stack `build` makes, print its URLs, supervise until SIGINT/SIGTERM; the
    exit code (1 when a component died or could not start)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only a flag: the main loop stops everything in order. A signal during start
        # takes effect between components (each start is bounded by its own timeout).
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(build(), stop, out, err)
    except Exception as exc:  # everything started is stopped by now; say why, briefly
        print(f"zipedge stack: {type(exc).__name__}: {exc}", file=err)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(stack: Stack, stop: threading.Event, out: TextIO, err: TextIO) -> int:
    stack.directory.mkdir(parents=True, exist_ok=True)
    specs = stack.specs()
    running: list[tuple[ComponentSpec, Component]] = []
    with contextlib.ExitStack() as cleanup:
        for spec in specs:
            if stop.is_set():
                print("zipedge stack: interrupted while starting; stopping", file=err)
                return 0
            print(f"zipedge stack: starting {spec.name}", file=err, flush=True)
            component = spec.create()
            # Registered before start: a start that fails half-way still gets stopped.
            cleanup.callback(_stop, spec.name, component, err)
            component.start()
            if spec.after_start is not None:
                spec.after_start()
            running.append((spec, component))

        for spec, component in running:
            if spec.url is not None:
                print(f"{spec.name}: {spec.url()}", file=out)
            else:
                print(f"zipedge stack: {spec.name} running (pid {component.pid})", file=err)
        out.flush()
        print(
            f"zipedge stack: {stack.hint()}\n"
            f"zipedge stack: logs in {stack.directory}; Ctrl-C stops everything",
            file=err,
            flush=True,
        )

        while not stop.wait(SUPERVISE_INTERVAL_S):
            for spec, component in running:
                pid = component.pid
                if pid is None or exited(pid):
                    print(
                        f"zipedge stack: {spec.name} exited unexpectedly; stopping everything. "
                        f"Its log ends with:\n{component.log_tail()}",
                        file=err,
                    )
                    return 1
        print("zipedge stack: stopping", file=err, flush=True)
        return 0


def _stop(name: str, component: Component, err: TextIO) -> None:
    try:
        component.stop()
    except Exception as exc:  # keep stopping the others
        print(f"zipedge stack: stopping {name} failed: {exc}", file=err)
    else:
        print(f"zipedge stack: stopped {name}", file=err, flush=True)
