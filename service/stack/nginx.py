"""Debian's `nginx` on a loopback port, from one of the repo's config templates.

A template (`nginx/nginx.conf.template`, `edge/nginx.conf.template`) holds `@@NAME@@`
placeholders, a style that cannot clash with nginx's own `$variables`; `@@NAME:-value@@`
is one with a default, used when no value is given. `Nginx` fills `LISTEN`,
`RUNTIME_DIR`, `ERROR_LOG` and `ACCESS_LOG` itself and every other placeholder from its
keyword arguments (`upstream="127.0.0.1:8000"` fills `@@UPSTREAM@@`), checks the result
with `nginx -t`, then runs it in the foreground with everything (pid file, temp files,
cache, sockets, logs) inside `data_dir`, so no root and no /etc/nginx are needed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from service.stack.ports import HOST, free_port
from service.stack.process import ManagedProcess

START_TIMEOUT_S = 20.0
#: SIGQUIT lets open downloads finish; the templates cap that with worker_shutdown_timeout.
STOP_TIMEOUT_S = 15.0
_TERM_TIMEOUT_S = 5.0
_START_ATTEMPTS = 3

#: Placeholders the launcher fills itself.
BUILTIN_PLACEHOLDERS = frozenset({"LISTEN", "RUNTIME_DIR", "ERROR_LOG", "ACCESS_LOG"})
#: `@@NAME@@`, or `@@NAME:-default@@` (group 2: the default, None without one).
_PLACEHOLDER = re.compile(r"@@([A-Z][A-Z0-9_]*)(?::-([^@]*))?@@")
#: A value is one nginx token: nothing that could end a directive or open a block.
_UNSAFE_VALUE = re.compile(r"[\s;{}\"'#$\\]")


def nginx_binary() -> str:
    # /usr/sbin is not on every user's PATH
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("nginx not found: apt-get install nginx")
    return found


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _uses(template: str) -> Iterator[tuple[str, str | None]]:
    """(name, default or None) of every placeholder outside comment lines."""
    for line in template.splitlines():
        if not _is_comment(line):
            for match in _PLACEHOLDER.finditer(line):
                yield match.group(1), match.group(2)


def placeholders(template: str) -> set[str]:
    """The placeholders a template uses, with or without a default (comment lines do not
    count)."""
    return {name for name, _ in _uses(template)}


def defaults(template: str) -> dict[str, str]:
    """The defaults of a template's `@@NAME:-default@@` placeholders. Raises `ValueError`
    when one name is given two different defaults."""
    found: dict[str, str] = {}
    for name, default in _uses(template):
        if default is not None and found.setdefault(name, default) != default:
            raise ValueError(f"{name} has two defaults: {found[name]!r} and {default!r}")
    return found


def required(template: str) -> set[str]:
    """The placeholders that need a value: used at least once without a default."""
    return {name for name, default in _uses(template) if default is None}


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with every `@@NAME@@` replaced by `values[NAME]` and every
    `@@NAME:-default@@` by `values[NAME]` or else its default; comment lines are kept as
    they are (they document the placeholders). nginx/render-template.sh does the same
    for Docker.

    Raises `ValueError` for a placeholder without a value and for a value (or default)
    that is not a single nginx token (a space, `;` or brace would silently change the
    config).
    """
    missing = required(template) - values.keys()
    if missing:
        raise ValueError(f"no value for {', '.join(sorted(missing))}")
    effective = {**defaults(template), **values}
    for name, value in effective.items():
        if not value or _UNSAFE_VALUE.search(value):
            raise ValueError(f"{name}={value!r} is empty or not a single nginx token")
    return "".join(
        line
        if _is_comment(line)
        else _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(2) or ""), line)
        for line in template.splitlines(keepends=True)
    )


def answers(port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


class Nginx(ManagedProcess):
    """nginx from `template` on 127.0.0.1:`port` (a free one unless given), state in `data_dir`.

    `values` fill the template's own placeholders; names are case-insensitive
    (`api_upstream=` fills `@@API_UPSTREAM@@`). Every one must be used by the template.
    """

    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(
        self,
        name: str,
        template: str | os.PathLike[str],
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        binary: str | None = None,
        **values: str,
    ) -> None:
        self.name = name
        self.template = Path(template)
        self.data_dir = Path(data_dir).resolve()
        self.binary = binary
        self.values = {key.upper(): value for key, value in values.items()}
        clash = self.values.keys() & BUILTIN_PLACEHOLDERS
        if clash:
            raise ValueError(f"{', '.join(sorted(clash))} are set by the launcher")
        self._fixed_port = port
        self.port = port or 0
        self.config_path = self.data_dir / "nginx.conf"
        self.log_path = self.data_dir / "error.log"
        self.access_log_path = self.data_dir / "access.log"
        super().__init__()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError(f"{self.name} is not started")
        return f"http://{HOST}:{self.port}"

    def render(self) -> str:
        text = self.template.read_text(encoding="utf-8")
        unused = self.values.keys() - placeholders(text)
        if unused:
            raise ValueError(f"{self.template} has no placeholder for {', '.join(sorted(unused))}")
        if "pid @@RUNTIME_DIR@@/nginx.pid;" not in text:
            raise ValueError(f"{self.template} must say `pid @@RUNTIME_DIR@@/nginx.pid;` (readiness)")
        return render(
            text,
            {
                **self.values,
                "LISTEN": f"{HOST}:{self.port}",
                "RUNTIME_DIR": str(self.data_dir),
                # stderr goes to error.log (see _spawn): one file for the startup
                # messages nginx writes before it has read the config, and the rest.
                "ERROR_LOG": "stderr",
                "ACCESS_LOG": str(self.access_log_path),
            },
        )

    def write_config(self) -> Path:
        """Render the template into `config_path` and check it with `nginx -t`."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        self.config_path.write_text(self.render(), encoding="utf-8")
        check = subprocess.run(
            self._command("-t", "-q"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=self.data_dir,
            check=False,
        )
        if check.returncode != 0:
            output = (check.stdout + check.stderr).decode(errors="replace")
            raise RuntimeError(f"{self.name}: nginx -t rejected {self.config_path}:\n{output}")
        return self.config_path

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        if self._fixed_port is not None and answers(self._fixed_port):
            raise RuntimeError(f"{self.name}: port {self._fixed_port} is already in use")

        def spawn() -> None:
            if self._fixed_port is None:
                self.port = 0  # a fresh free port on every attempt
            self.write_config()
            self._spawn()

        self._launch(
            f"{self.name} (nginx)",
            spawn=spawn,
            ready=self._ready,
            deadline=time.monotonic() + timeout,
            attempts=_START_ATTEMPTS,
            retry=self._fixed_port is None,
        )

    def _request_stop(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Graceful stop (SIGQUIT: finish open requests), then fast (SIGTERM); the base
        class kills what is left."""
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            proc.wait(_TERM_TIMEOUT_S)

    def _command(self, *extra: str) -> list[str]:
        directives = "daemon off;"
        if os.geteuid() == 0:
            # As root nginx would run its workers as `nobody`, who cannot reach a data
            # dir under a private (0700) temp folder. This is a throwaway loopback
            # server started by root anyway; the Docker image keeps its own `user`.
            directives += " user root;"
        return [
            self.binary or nginx_binary(),
            "-p", f"{self.data_dir}/",
            "-c", str(self.config_path),
            "-e", "stderr",  # not the compiled-in /var/log/nginx/error.log (root-only)
            "-g", directives,
            *extra,
        ]  # fmt: skip

    def _ready(self) -> bool:
        # nginx writes its pid file only after it has bound every listen socket, so a
        # matching pid file means the port answering is ours, not someone else's.
        assert self._proc is not None
        try:
            pid = int((self.data_dir / "nginx.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            return False
        return pid == self._proc.pid and answers(self.port)

    def _spawn(self) -> None:
        # A killed nginx leaves its unix sockets (the edge's hops) behind and bind() then
        # fails on them. The data dir is this launcher's alone: any socket in it is such
        # a leftover.
        for path in self.data_dir.glob("*.sock"):
            if path.is_socket():
                path.unlink(missing_ok=True)
        self._popen(self._command(), cwd=self.data_dir)

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() != 0:
            # Killed or crashed: workers outlive their master, so end the whole process
            # group (its own, from start_new_session) while its id is still ours. A
            # master that exited cleanly has already waited for its workers.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
