"""The reverse proxy (nginx/nginx.conf.template) run by Debian's nginx in front of a tiny
ASGI app on a real uvicorn: streams and SSE pass unbuffered, lengths and bytes intact,
no gzip on ZIPs, client aborts reach the app, an upstream cut reaches the client.

Ordering is proven with handshakes, never timings: the app holds the rest of a response
until the test has received the first bytes *through nginx*, so a buffering proxy would
never deliver them (and the test would fail at its read deadline).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from service.stack.nginx import Nginx, defaults, placeholders, render, required
from tests.servers import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "nginx" / "nginx.conf.template"
EDGE_TEMPLATE = ROOT / "edge" / "nginx.conf.template"
RENDER_SCRIPT = ROOT / "nginx" / "render-template.sh"

#: Small on purpose: a buffering proxy holds this much until its buffer fills or the
#: upstream finishes, so it cannot reach the client "by accident".
FIRST = b"PK\x03\x04" + b"a" * 996
REST = os.urandom(3 * 1024 * 1024)
#: Deadline for a read that a correct proxy answers at once (a failure, not a timing).
READ_DEADLINE_S = 20.0

EDGE_VALUES = {
    "api_upstream": "127.0.0.1:9",
    "origin": "127.0.0.1:9",
    "cache_bucket": "zipedge-cache",
    "slice_size": "1m",
    "cache_valid": "1h",
    "cache_max_size": "100m",
}


@dataclass
class Gates:
    """Handshakes between the test thread and the app (which runs in uvicorn's thread)."""

    release: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)


def make_app(gates: Gates) -> Any:
    async def wait(event: threading.Event) -> None:
        await anyio.to_thread.run_sync(event.wait, abandon_on_cancel=True)

    async def start(send: Any, status: int, content_type: bytes, length: int | None = None) -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        gates.requests.append(path)
        if path == "/v1/slow.zip":
            await start(send, 200, b"application/zip", len(FIRST) + len(REST))
            await send({"type": "http.response.body", "body": FIRST, "more_body": True})
            await wait(gates.release)
            await send({"type": "http.response.body", "body": REST})
        elif path == "/v1/jobs/j1/events":
            await start(send, 200, b"text/event-stream")
            await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
            await wait(gates.release)
            await send({"type": "http.response.body", "body": b"data: two\n\n"})
        elif path == "/v1/abort.zip":
            await start(send, 200, b"application/zip", len(FIRST) + len(REST))
            await send({"type": "http.response.body", "body": FIRST, "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            gates.disconnected.set()
        elif path == "/v1/short.zip":
            await start(send, 200, b"application/zip", len(FIRST) + len(REST))
            await send({"type": "http.response.body", "body": FIRST, "more_body": True})
            # return without the rest: uvicorn closes the connection mid-body
        else:
            await start(send, 200, b"application/json", 11)
            await send({"type": "http.response.body", "body": b'{"ok":true}'})

    return app


@dataclass
class Proxied:
    url: str
    gates: Gates


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Proxied]:
    gates = Gates()
    try:
        with serve(make_app(gates)) as app_url:
            upstream = app_url.removeprefix("http://")
            with Nginx("nginx", NGINX_TEMPLATE, tmp_path / "nginx", upstream=upstream) as proxy:
                yield Proxied(proxy.url, gates)
    finally:
        gates.release.set()  # never leave the app waiting on a failed test


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=READ_DEADLINE_S)


# --- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "values"),
    [(NGINX_TEMPLATE, {"upstream": "127.0.0.1:9"}), (EDGE_TEMPLATE, EDGE_VALUES)],
    ids=["nginx", "edge"],
)
def test_templates_render_and_pass_nginx_t(template: Path, values: dict[str, str], tmp_path: Path) -> None:
    server = Nginx(template.parent.name, template, tmp_path, **values)
    config = server.write_config().read_text()
    # nothing left to fill outside comments; nginx -t passed inside write_config
    assert not placeholders(config)
    assert f"listen 127.0.0.1:{server.port};" in config


def test_render_refuses_missing_unused_and_unsafe_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="UPSTREAM"):
        Nginx("nginx", NGINX_TEMPLATE, tmp_path).render()
    with pytest.raises(ValueError, match="TYPO"):
        Nginx("nginx", NGINX_TEMPLATE, tmp_path, upstream="127.0.0.1:9", typo="x").render()
    with pytest.raises(ValueError, match="single nginx token"):
        render("server @@UPSTREAM@@;", {"UPSTREAM": "127.0.0.1:9; include /etc/passwd"})
    with pytest.raises(ValueError, match="set by the launcher"):
        Nginx("nginx", NGINX_TEMPLATE, tmp_path, listen="0.0.0.0:80")
    # comment lines document placeholders and are left alone
    assert render("# @@X@@ is\nx @@X@@;\n", {"X": "1"}) == "# @@X@@ is\nx 1;\n"


def test_placeholders_with_defaults(tmp_path: Path) -> None:
    template = "# @@B:-9@@ is documented\na @@A@@;\nb @@B:-2@@ @@B:-2@@;\nc @@C:-x/y@@;\n"
    assert placeholders(template) == {"A", "B", "C"}
    assert required(template) == {"A"}
    assert defaults(template) == {"B": "2", "C": "x/y"}
    assert render(template, {"A": "1"}) == "# @@B:-9@@ is documented\na 1;\nb 2 2;\nc x/y;\n"
    assert render(template, {"A": "1", "B": "5"}) == "# @@B:-9@@ is documented\na 1;\nb 5 5;\nc x/y;\n"
    with pytest.raises(ValueError, match="A"):
        render(template, {"B": "5"})
    with pytest.raises(ValueError, match="two defaults"):
        render("x @@X:-1@@ @@X:-2@@;", {})
    with pytest.raises(ValueError, match="single nginx token"):
        render("x @@X:-1; include /etc/passwd@@;", {})
    # the shell renderer (Docker) agrees, on defaults and overrides alike
    source, out = tmp_path / "t.conf.template", tmp_path / "t.conf"
    source.write_text(template)
    for env in ({"A": "1"}, {"A": "1", "B": "5"}):
        subprocess.run(
            ["sh", str(RENDER_SCRIPT), str(source), str(out)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
            check=True,
        )
        assert out.read_text() == render(template, env)
    # the shipped templates' defaults
    assert "ORIGIN_TIMEOUT" in defaults(EDGE_TEMPLATE.read_text())


def test_the_edge_starts_over_sockets_a_killed_edge_left(tmp_path: Path) -> None:
    # a killed nginx leaves its unix sockets; bind() fails on an existing path
    for name in ("origin.sock", "relay.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
            stale.bind(str(tmp_path / name))
    with Nginx("edge", EDGE_TEMPLATE, tmp_path, **EDGE_VALUES) as edge, client(edge.url) as http:
        assert http.get("/zipedge-cache/x.zip").status_code == 502  # up; the origin is not


@pytest.mark.parametrize(
    ("template", "values"),
    [(NGINX_TEMPLATE, {"upstream": "service:8000"}), (EDGE_TEMPLATE, EDGE_VALUES)],
    ids=["nginx", "edge"],
)
def test_docker_renderer_matches_the_python_one(
    template: Path, values: dict[str, str], tmp_path: Path
) -> None:
    """docker-compose.yml renders with nginx/render-template.sh: same rules, same output."""
    env = {
        **{k.upper(): v for k, v in values.items()},
        "LISTEN": "8080",
        "RUNTIME_DIR": "/var/cache/nginx",
        "ERROR_LOG": "stderr",
        "ACCESS_LOG": "/dev/stdout",
    }
    out = tmp_path / "nginx.conf"
    subprocess.run(
        ["sh", str(RENDER_SCRIPT), str(template), str(out)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        check=True,
    )
    assert out.read_text() == render(template.read_text(), env)
    # defaults apply when unset, and a value overrides them, in both renderers
    for name, default in defaults(template.read_text()).items():
        override = {**env, name: "1234"}
        subprocess.run(
            ["sh", str(RENDER_SCRIPT), str(template), str(out)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **override},
            check=True,
        )
        assert out.read_text() == render(template.read_text(), override)
        assert out.read_text() != render(template.read_text(), env), (
            f"{name} (default {default}) was not overridden"
        )

    missing = {k: v for k, v in env.items() if k != "RUNTIME_DIR"}
    failed = subprocess.run(
        ["sh", str(RENDER_SCRIPT), str(template), str(tmp_path / "other.conf")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **missing},
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode != 0 and "RUNTIME_DIR is not set" in failed.stderr
    assert not (tmp_path / "other.conf").exists() and not (tmp_path / "other.conf.tmp").exists()


# --- behaviour through the proxy ----------------------------------------------------------


def test_stream_is_not_buffered_and_keeps_its_length(proxied: Proxied) -> None:
    with (
        client(proxied.url) as http,
        http.stream("GET", "/v1/slow.zip", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.status_code == 200
        # exact length kept, no compression (the app sent no X-Accel-Buffering either)
        assert response.headers["content-length"] == str(len(FIRST) + len(REST))
        assert "content-encoding" not in response.headers
        chunks = response.iter_raw()
        received = b""
        while len(received) < len(FIRST):
            received += next(chunks)
        # The app is still holding the rest: these bytes came through nginx unbuffered.
        assert not proxied.gates.release.is_set()
        assert received[: len(FIRST)] == FIRST
        proxied.gates.release.set()
        received += b"".join(chunks)
    assert received == FIRST + REST


def test_server_sent_events_are_not_buffered(proxied: Proxied) -> None:
    with client(proxied.url) as http, http.stream("GET", "/v1/jobs/j1/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.iter_lines()
        assert next(lines) == "data: one"
        assert not proxied.gates.release.is_set()
        proxied.gates.release.set()
        rest = [line for line in lines if line]
    assert rest == ["data: two"]


def test_client_abort_reaches_the_app(proxied: Proxied) -> None:
    port = int(proxied.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE_S) as sock:
        sock.sendall(b"GET /v1/abort.zip HTTP/1.1\r\nHost: zipedge.test\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < len(FIRST):
            chunk = sock.recv(65536)
            assert chunk, "nginx closed before the first bytes"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
    # the browser went away: nginx closes the upstream connection and uvicorn tells the app
    assert proxied.gates.disconnected.wait(READ_DEADLINE_S)


def test_upstream_cut_leaves_the_client_incomplete(proxied: Proxied) -> None:
    received = b""
    with client(proxied.url) as http:
        with pytest.raises(httpx.RemoteProtocolError), http.stream("GET", "/v1/short.zip") as response:
            assert response.headers["content-length"] == str(len(FIRST) + len(REST))
            for chunk in response.iter_raw():
                received += chunk
    assert received == FIRST  # what was sent, and visibly short of the promised length


def test_small_answers_pass(proxied: Proxied) -> None:
    with client(proxied.url) as http:
        response = http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_nginx_found() -> None:
    assert shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
