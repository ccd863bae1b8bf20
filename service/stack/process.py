"""What every local server launcher shares: one child process writing to one log file,
stopped politely then firmly, with the log's tail for error messages."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

#: How much of a log an error message quotes (bytes).
LOG_TAIL_BYTES = 4000


class ManagedProcess(ABC):
    """Subclasses set `log_path`, implement `start()` (spawning into `_proc` with `_log` as
    its output), and may change how a stop is asked for (`_request_stop`) or how a dead
    process is cleaned up (`_reap`)."""

    log_path: Path
    stop_timeout_s: float = 10.0
    #: When the process did not exit cleanly, kill its whole process group (its own, see
    #: `_popen`): for servers whose children outlive their parent when it is killed.
    kill_group: bool = False

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @abstractmethod
    def start(self) -> None:
        """Spawn the server and return once it answers."""

    def _popen(self, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
        """Start `args` as `_proc`, its output appended to `log_path`. Its own session: a
        Ctrl-C meant for the parent must not kill it mid-test, and a stack stops its
        children in order (nginx's workers are signalled as a group, see its `_reap`)."""
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    def _launch(
        self,
        label: str,
        *,
        spawn: Callable[[], None],
        ready: Callable[[], bool],
        deadline: float,
        attempts: int,
        retry: bool = True,
        poll_s: float = 0.05,
    ) -> None:
        """Spawn until the process answers `ready()`. A process that exits at start most
        likely lost its probed port to someone else: `spawn` again (it picks a new one)."""
        for attempt in range(1, attempts + 1):
            spawn()
            assert self._proc is not None
            while self._proc.poll() is None and not ready():
                if time.monotonic() >= deadline:
                    self.stop()
                    raise TimeoutError(f"{label} not ready; log tail:\n{self.log_tail()}")
                time.sleep(poll_s)
            if self._proc.poll() is None:
                return
            self._reap()
            if not retry or attempt == attempts or time.monotonic() >= deadline:
                raise RuntimeError(f"{label} exited at start:\n{self.log_tail()}")

    def _request_stop(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Ask the process to exit and wait up to `timeout` (raises TimeoutExpired)."""
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self._request_stop(proc, self.stop_timeout_s if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self.kill_group and proc.poll() != 0:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, limit: int = LOG_TAIL_BYTES) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - limit))
                return fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
