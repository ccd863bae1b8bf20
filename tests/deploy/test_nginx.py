"""The reverse proxy (nginx/nginx.conf.template) run by Debian's nginx in front of a tiny
ASGI app on a real uvicorn: streams and SSE pass unbuffered, lengths and bytes intact,
no gzip on ZIPs, client aborts reach the app, an upstream cut reaches the client; per-
client rate and concurrency limits answer 429, and whatever nginx refuses itself is JSON
while the app's own errors pass untouched.

Ordering is proven with handshakes, never timings: the app holds the rest of a response
until the test has received the first bytes *through nginx*, so a buffering proxy would
never deliver them (and the test would fail at its read deadline).
"""

from __future__ import annotations

import contextlib
import json
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
#: The app's own errors, which nginx must pass byte for byte.
OWN_429 = b'{"error":{"code":"rate_limited","message":"the service says wait"}}'
OWN_502 = b'{"error":{"code":"source_error","message":"the service says the source failed"}}'
#: Small limits, so tests reach them with a handful of requests: 1 a minute (none refill
#: during a test) plus a burst of 2, and one open request on /v1/ per client.
LIMITS = {"limit_rate": "1r/m", "limit_burst": "2", "limit_conn": "1"}

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
    headers: list[dict[str, str]] = field(default_factory=list)


def make_app(gates: Gates) -> Any:
    async def wait(event: threading.Event) -> None:
        await anyio.to_thread.run_sync(event.wait, abandon_on_cancel=True)

    async def start(
        send: Any, status: int, content_type: bytes, length: int | None = None, *extra: tuple[bytes, bytes]
    ) -> None:
        headers = [(b"content-type", content_type), *extra]
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
        gates.headers.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
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
        elif path == "/v1/upload":
            answer = f'{{"received":{await body_size(receive)}}}'.encode()
            await start(send, 200, b"application/json", len(answer))
            await send({"type": "http.response.body", "body": answer})
        else:
            status, extra, body = CANNED.get(path, (200, [], b'{"ok":true}'))
            await start(send, status, b"application/json", len(body), *extra)
            await send({"type": "http.response.body", "body": body})

    return app


#: Fixed JSON answers of the app: path -> (status, extra headers, body); any other path
#: answers 200 {"ok":true}.
CANNED: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "/v1/busy": (429, [(b"retry-after", b"7")], OWN_429),
    "/v1/broken": (502, [], OWN_502),
}


async def body_size(receive: Any) -> int:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            return size


@dataclass
class Proxied:
    url: str
    gates: Gates


@contextlib.contextmanager
def proxy_in_front(tmp_path: Path, **values: str) -> Iterator[Proxied]:
    gates = Gates()
    try:
        with serve(make_app(gates)) as app_url:
            upstream = app_url.removeprefix("http://")
            with Nginx("nginx", NGINX_TEMPLATE, tmp_path / "nginx", upstream=upstream, **values) as proxy:
                yield Proxied(proxy.url, gates)
    finally:
        gates.release.set()  # never leave the app waiting on a failed test


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Proxied]:
    """The template with its default limits."""
    with proxy_in_front(tmp_path) as proxy:
        yield proxy


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Proxied]:
    """The template with LIMITS; each test uses its own client addresses (X-Forwarded-For
    from 127.0.0.1, which REAL_IP_FROM trusts by default), so buckets never mix."""
    with proxy_in_front(tmp_path, **LIMITS) as proxy:
        yield proxy


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port held by a socket that never listens: connections are refused, and
    no other process can take the port meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def raw_request(url: str, request: bytes) -> bytes:
    """Send `request` as it is and return everything until nginx closes or a full response
    (headers and a Content-Length body) has arrived."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE_S) as sock:
        sock.sendall(request)
        data = b""
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lengths = [
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if lengths and len(body) >= lengths[0]:
                    return data
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code and body["error"]["message"]


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
    # the shipped templates' limits have defaults: `zipedge stack` and compose need not set them
    assert {"LIMIT_RATE", "LIMIT_BURST", "LIMIT_CONN", "REAL_IP_FROM"} <= set(
        defaults(NGINX_TEMPLATE.read_text())
    )
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


# --- first line of defence: limits and nginx's own errors as JSON -------------------------


def test_a_burst_over_the_rate_gets_json_429s_per_client(limited: Proxied) -> None:
    with client(limited.url) as http:
        one = {"X-Forwarded-For": "203.0.113.1"}
        # the rate's one request plus the burst of 2 pass at once (nodelay) ...
        assert [http.get("/v1/ok", headers=one).status_code for _ in range(3)] == [200, 200, 200]
        # ... the next is refused by nginx, and never reaches the app
        seen = len(limited.gates.requests)
        refused = http.get("/v1/ok", headers=one)
        assert_json_error(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "1"
        assert len(limited.gates.requests) == seen
        # keyed by the client the edge names, not by the edge's own address
        other = http.get("/v1/ok", headers={"X-Forwarded-For": "203.0.113.2"})
        assert other.status_code == 200 and other.json() == {"ok": True}


def test_open_requests_over_the_cap_get_json_429(limited: Proxied) -> None:
    me = {"X-Forwarded-For": "203.0.113.3"}
    with client(limited.url) as http, client(limited.url) as second:
        with http.stream("GET", "/v1/slow.zip", headers=me) as download:
            assert download.status_code == 200
            # the download is open, held by the app (keep the iterator: dropping it would
            # close the connection)
            chunks = download.iter_raw()
            next(chunks)
            refused = second.get("/v1/ok", headers=me)
            assert_json_error(refused, 429, "rate_limited")
            assert refused.headers["retry-after"] == "1"
            assert second.get("/v1/ok", headers={"X-Forwarded-For": "203.0.113.4"}).status_code == 200
            limited.gates.release.set()
            assert b"".join(chunks)
        # the download is over: its slot is free again
        assert second.get("/v1/ok", headers=me).status_code == 200


def test_the_service_sees_the_client_and_the_chain(proxied: Proxied) -> None:
    with client(proxied.url) as http:
        assert http.get("/healthz", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 200
        assert http.get("/healthz").status_code == 200
    forwarded, direct = proxied.gates.headers[-2:]
    # behind the edge: the client it named, and the chain with the edge (here 127.0.0.1) appended
    assert forwarded["x-real-ip"] == "198.51.100.7"
    assert forwarded["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
    assert direct["x-real-ip"] == "127.0.0.1" and direct["x-forwarded-for"] == "127.0.0.1"


def test_a_long_request_line_is_a_json_414(proxied: Proxied) -> None:
    # curl, since httpx refuses to build a URL this long
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{content_type}",
            f"{proxied.url}/v1/zip?q={'a' * 100_000}",
        ],
        capture_output=True,
        text=True,
        timeout=READ_DEADLINE_S,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    assert status == "414 application/json"
    assert json.loads(body)["error"]["code"] == "uri_too_long"
    assert proxied.gates.requests == []


def test_huge_headers_are_a_json_431(proxied: Proxied) -> None:
    with client(proxied.url) as http:
        response = http.get("/v1/ok", headers={"X-Big": "b" * 20_000})
    assert_json_error(response, 431, "headers_too_large")
    assert proxied.gates.requests == []


def test_unknown_methods_are_json_errors(proxied: Proxied) -> None:
    with client(proxied.url) as http:
        assert_json_error(http.request("FOO", "/v1/ok"), 501, "not_implemented")
        assert_json_error(http.request("TRACE", "/v1/ok"), 405, "method_not_allowed")
    # not a method token at all: nginx cannot parse the request line
    raw = raw_request(proxied.url, b"foo /v1/ok HTTP/1.1\r\nHost: zipedge.test\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert proxied.gates.requests == []


def test_bodies_up_to_64_mib_pass_and_bigger_ones_are_json_413(proxied: Proxied) -> None:
    photo = os.urandom(50 * 1024 * 1024)
    with client(proxied.url) as http:
        response = http.post("/v1/upload", content=photo)
    assert response.status_code == 200 and response.json() == {"received": len(photo)}
    # refused on its Content-Length alone, before any of the body is read
    raw = raw_request(
        proxied.url,
        b"POST /v1/upload HTTP/1.1\r\nHost: zipedge.test\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\nxxxx" % (64 * 1024 * 1024 + 1),
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert json.loads(body)["error"]["code"] == "too_large"
    assert proxied.gates.requests == ["/v1/upload"]


def test_the_services_own_errors_pass_untouched(proxied: Proxied) -> None:
    with client(proxied.url) as http:
        busy = http.get("/v1/busy")
        broken = http.get("/v1/broken")
    assert busy.status_code == 429 and busy.content == OWN_429
    assert busy.headers["retry-after"] == "7"  # the service's, not nginx's 1
    assert broken.status_code == 502 and broken.content == OWN_502


def test_a_service_that_is_down_is_a_json_502(tmp_path: Path) -> None:
    with (
        refusing_port() as port,
        Nginx("nginx", NGINX_TEMPLATE, tmp_path, upstream=f"127.0.0.1:{port}") as proxy,
    ):
        with client(proxy.url) as http:
            for path in ("/healthz", "/v1/zip?from=2025-01-01&to=2025-01-02"):
                assert_json_error(http.get(path), 502, "bad_gateway")
