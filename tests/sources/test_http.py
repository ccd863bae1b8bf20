"""HttpOrigin against a real HTTP server on 127.0.0.1, plus respx for faults that cannot be
made for real (a reset mid-body, timeouts, an origin that ignores ranges or gzips).

No test reaches the internet: the real server is on loopback, respx answers every other
host (`res.cloudinary.test`) and refuses any request it has no route for.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import constants
from service.constants import MAX_URL_CHARS
from service.exceptions import (
    ConfigError,
    HostNotAllowed,
    InvalidParameter,
    ObjectChanged,
    ObjectMissing,
    ObjectNotFound,
    RequestError,
    SourceError,
    SourceUnavailable,
    ZipedgeError,
)
from service.sources.http import HttpOrigin
from service.sources.urlguard import is_public_address, normalise_allow_hosts, validate_url

# --- a real origin on loopback -----------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class LocalOrigin:
    port: int
    root: Path
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def put(self, name: str, data: bytes, mtime: int = 1_700_000_000) -> bytes:
        path = self.root / name
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))
        return data

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]


def _origin_app(origin: LocalOrigin) -> ASGIApp:
    async def files(request: Request) -> Response:
        path = origin.root / request.path_params["name"]
        if not path.is_file():
            return Response(status_code=404)
        return FileResponse(path)  # Range, If-Range, ETag and Last-Modified, as a CDN would

    async def no_head(request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=405, headers={"Allow": "GET"})
        return FileResponse(origin.root / request.path_params["name"])

    async def redirect(request: Request) -> Response:
        return RedirectResponse(f"/files/{request.path_params['name']}", status_code=302)  # relative

    async def redirect_alias(request: Request) -> Response:
        # Another allowed host on the same server.
        return RedirectResponse(origin.url(f"/files/{request.path_params['name']}", "localhost"), 301)

    async def redirect_away(request: Request) -> Response:
        return RedirectResponse("http://evil.test/steal.jpg", status_code=302)

    async def redirect_loop(request: Request) -> Response:
        return RedirectResponse("/loop", status_code=307)

    async def status(request: Request) -> Response:
        return Response(b"nope", status_code=int(request.path_params["code"]))

    app = Starlette(
        routes=[
            Route("/files/{name}", files, methods=["GET", "HEAD"]),
            Route("/no-head/{name}", no_head, methods=["GET", "HEAD"]),
            Route("/redirect/{name}", redirect, methods=["GET", "HEAD"]),
            Route("/alias/{name}", redirect_alias, methods=["GET", "HEAD"]),
            Route("/away", redirect_away, methods=["GET", "HEAD"]),
            Route("/loop", redirect_loop, methods=["GET", "HEAD"]),
            Route("/status/{code:int}", status, methods=["GET", "HEAD"]),
        ]
    )

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            origin.seen.append(Seen(scope["method"], scope["path"], headers))
        await app(scope, receive, send)

    return logged


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrigin]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    origin = LocalOrigin(port=sock.getsockname()[1], root=tmp_path_factory.mktemp("origin"))
    config = uvicorn.Config(
        _origin_app(origin),
        lifespan="off",
        http="h11",
        ws="none",
        loop="asyncio",
        log_config=None,
        access_log=False,
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="origin", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the local origin did not start")
        time.sleep(0.01)
    try:
        yield origin
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
async def origin(server: LocalOrigin) -> AsyncIterator[HttpOrigin]:
    # The local origin's own port only: a bare host would mean port 80.
    allow = frozenset({f"127.0.0.1:{server.port}", f"localhost:{server.port}"})
    reader = HttpOrigin(allow_hosts=allow, allow_private=True)
    yield reader
    await reader.aclose()


async def read_all(reader: HttpOrigin, url: str, **kwargs: Any) -> list[bytes]:
    async with contextlib.aclosing(reader.read(url, **kwargs)) as chunks:
        return [chunk async for chunk in chunks]


def photo(size: int, seed: int = 0) -> bytes:
    block = hashlib.sha256(f"photo-{seed}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


# --- stat and read against the real server -----------------------------------------------------


async def test_stat_reads_size_etag_and_mtime(server: LocalOrigin, origin: HttpOrigin) -> None:
    server.put("stat.jpg", photo(12_345), mtime=1_736_000_000)
    info = await origin.stat(server.url("/files/stat.jpg"))

    assert (info.key, info.size, info.mtime) == (server.url("/files/stat.jpg"), 12_345, 1_736_000_000)
    (head,) = server.requests_to("/files/stat.jpg")
    assert head.method == "HEAD"
    assert head.headers["accept-encoding"] == "identity"
    assert head.headers["user-agent"].startswith("zipedge/")
    assert info.etag and '"' not in info.etag


async def test_read_whole_object_in_bounded_chunks(server: LocalOrigin, origin: HttpOrigin) -> None:
    data = server.put("big.jpg", photo(3 * constants.READ_CHUNK_BYTES + 123))
    info = await origin.stat(server.url("/files/big.jpg"))

    chunks = await read_all(origin, info.key, etag=info.etag)

    assert b"".join(chunks) == data
    # Socket reads are gathered into full chunks, the last one shorter.
    assert [len(chunk) for chunk in chunks[:-1]] == [constants.READ_CHUNK_BYTES] * 3
    assert len(chunks[-1]) == 123


async def test_read_from_offset_sends_range_and_if_range(server: LocalOrigin, origin: HttpOrigin) -> None:
    data = server.put("resume.jpg", photo(500_000))
    info = await origin.stat(server.url("/files/resume.jpg"))

    chunks = await read_all(origin, info.key, offset=300_001, etag=info.etag)

    assert b"".join(chunks) == data[300_001:]
    get = server.requests_to("/files/resume.jpg")[-1]
    assert get.headers["range"] == "bytes=300001-"
    assert get.headers["if-range"] == f'"{info.etag}"'


async def test_a_resume_without_a_validator_fails_rather_than_splice(
    server: LocalOrigin, origin: HttpOrigin
) -> None:
    """Without a validator the rest could come from a newer version: the member would be
    two versions glued together, with a valid CRC over the mix. Never."""
    data = server.put("plain.jpg", photo(1000))
    assert b"".join(await read_all(origin, server.url("/files/plain.jpg"))) == data  # whole: fine
    before = len(server.requests_to("/files/plain.jpg"))
    with pytest.raises(SourceError, match="no strong ETag") as caught:
        await read_all(origin, server.url("/files/plain.jpg"), offset=10)
    assert not caught.value.retryable
    assert len(server.requests_to("/files/plain.jpg")) == before  # not even asked


@pytest.mark.parametrize("offset", [0, 100])
async def test_read_after_the_file_changed(server: LocalOrigin, origin: HttpOrigin, offset: int) -> None:
    name = f"changed-{offset}.jpg"
    server.put(name, photo(5000), mtime=1_700_000_000)
    info = await origin.stat(server.url(f"/files/{name}"))
    server.put(name, photo(5001, seed=1), mtime=1_700_000_100)

    with pytest.raises(ObjectChanged):
        await read_all(origin, info.key, offset=offset, etag=info.etag)


async def test_redirect_on_the_same_host(server: LocalOrigin, origin: HttpOrigin) -> None:
    data = server.put("moved.jpg", photo(4321))
    url = server.url("/redirect/moved.jpg")

    info = await origin.stat(url)
    assert (info.key, info.size) == (url, 4321)  # the entry keeps the URL it was given
    assert b"".join(await read_all(origin, url, offset=21, etag=info.etag)) == data[21:]
    # Range and If-Range travel with the redirected request.
    assert server.requests_to("/files/moved.jpg")[-1].headers["range"] == "bytes=21-"


async def test_redirect_to_another_allowed_host(server: LocalOrigin, origin: HttpOrigin) -> None:
    data = server.put("alias.jpg", photo(999))
    url = server.url("/alias/alias.jpg")

    assert (await origin.stat(url)).size == 999
    assert b"".join(await read_all(origin, url)) == data
    assert server.requests_to("/files/alias.jpg")[-1].headers["host"] == f"localhost:{server.port}"


async def test_redirect_to_a_host_not_allowed(server: LocalOrigin, origin: HttpOrigin) -> None:
    url = server.url("/away")
    with pytest.raises(HostNotAllowed, match="allow list"):
        await origin.stat(url)  # request time: the caller's URL leads somewhere forbidden → 400

    with pytest.raises(SourceError, match="allow list") as caught:
        await read_all(origin, url)  # stream time: a SourceError, never retried
    assert not caught.value.retryable
    assert not isinstance(caught.value, RequestError)


async def test_redirect_loop_stops(server: LocalOrigin, origin: HttpOrigin) -> None:
    before = len(server.requests_to("/loop"))
    with pytest.raises(SourceError, match="redirects") as caught:
        await origin.stat(server.url("/loop"))
    assert not caught.value.retryable
    assert len(server.requests_to("/loop")) - before == constants.HTTP_MAX_REDIRECTS + 1


async def test_head_refused_falls_back_to_a_one_byte_get(server: LocalOrigin, origin: HttpOrigin) -> None:
    data = server.put("nohead.jpg", photo(7777))
    url = server.url("/no-head/nohead.jpg")

    info = await origin.stat(url)

    assert info.size == 7777
    head, get = server.requests_to("/no-head/nohead.jpg")
    assert (head.method, get.method, get.headers["range"]) == ("HEAD", "GET", "bytes=0-0")
    assert b"".join(await read_all(origin, url, etag=info.etag)) == data


@pytest.mark.parametrize("path", ["/files/absent.jpg", "/status/410"])
async def test_missing_object(server: LocalOrigin, origin: HttpOrigin, path: str) -> None:
    with pytest.raises(ObjectNotFound):
        await origin.stat(server.url(path))
    with pytest.raises(ObjectMissing):  # read speaks SourceError only
        await read_all(origin, server.url(path))


async def test_server_error_is_retryable(server: LocalOrigin, origin: HttpOrigin) -> None:
    with pytest.raises(SourceUnavailable, match="HTTP 500"):
        await origin.stat(server.url("/status/500"))
    with pytest.raises(SourceUnavailable):
        await read_all(origin, server.url("/status/503"))


async def test_other_client_errors_are_not_retryable(server: LocalOrigin, origin: HttpOrigin) -> None:
    with pytest.raises(SourceError, match="HTTP 403") as caught:
        await origin.stat(server.url("/status/403"))
    assert not caught.value.retryable
    assert [seen.method for seen in server.requests_to("/status/403")] == ["HEAD", "GET"]


async def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reader = HttpOrigin(allow_hosts=frozenset({f"127.0.0.1:{port}"}), allow_private=True)
    try:
        with pytest.raises(SourceUnavailable):
            await reader.stat(f"http://127.0.0.1:{port}/x.jpg")
    finally:
        await reader.aclose()


async def test_an_allowed_host_on_another_port_is_refused(server: LocalOrigin) -> None:
    # "127.0.0.1" alone allows port 80 only; the server's port must be listed.
    for allow in ({"127.0.0.1"}, {f"127.0.0.1:{server.port + 1}"}):
        reader = HttpOrigin(allow_hosts=frozenset(allow), allow_private=True)
        try:
            with pytest.raises(HostNotAllowed, match="allow list"):
                await reader.stat(server.url("/files/x.jpg"))
        finally:
            await reader.aclose()
    assert server.requests_to("/files/x.jpg") == []


async def test_url_outside_the_allow_list_is_refused_before_any_request(server: LocalOrigin) -> None:
    reader = HttpOrigin(allow_hosts=frozenset({f"localhost:{server.port}"}), allow_private=True)
    try:
        with pytest.raises(HostNotAllowed):
            await reader.stat(server.url("/files/x.jpg"))  # 127.0.0.1 is not "localhost"
        with pytest.raises(SourceError):
            await read_all(reader, server.url("/files/x.jpg"))
    finally:
        await reader.aclose()
    assert server.requests_to("/files/x.jpg") == []


# --- SSRF: addresses are checked when connecting --------------------------------------------


async def test_loopback_refused_without_allow_private(server: LocalOrigin) -> None:
    server.put("private.jpg", photo(10))
    reader = HttpOrigin(allow_hosts=frozenset({f"localhost:{server.port}"}))
    try:
        with pytest.raises(HostNotAllowed, match="non-public address"):
            await reader.stat(server.url("/files/private.jpg", "localhost"))
        with pytest.raises(SourceError, match="non-public address") as caught:
            await read_all(reader, server.url("/files/private.jpg", "localhost"))
        assert not caught.value.retryable
    finally:
        await reader.aclose()
    assert server.requests_to("/files/private.jpg") == []


async def test_metadata_address_refused() -> None:
    reader = HttpOrigin(allow_hosts=frozenset({"169.254.169.254"}))
    try:
        with pytest.raises(HostNotAllowed, match="169.254.169.254"):
            await reader.stat("http://169.254.169.254/latest/meta-data/")
    finally:
        await reader.aclose()


class OneShotDns:
    """Answers `name` once with `address`, then fails it: a resolver that would rebind."""

    def __init__(self, name: str, address: str) -> None:
        self.name, self.address, self.answered = name, address, 0
        self.real = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        self.answered += 1
        if self.answered > 1:
            raise socket.gaierror(socket.EAI_NONAME, "resolved twice: the checked address was not pinned")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (self.address, port))]


async def test_connects_to_the_checked_address(server: LocalOrigin, monkeypatch: pytest.MonkeyPatch) -> None:
    # One lookup per connection, and the connection goes to the address that was checked while
    # the Host header keeps the name: a DNS answer that changes after the check is never used.
    dns = OneShotDns("photos.test", "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    server.put("pinned.jpg", photo(321))
    reader = HttpOrigin(allow_hosts=frozenset({f"photos.test:{server.port}"}), allow_private=True)
    try:
        info = await reader.stat(server.url("/files/pinned.jpg", "photos.test"))
    finally:
        await reader.aclose()
    assert info.size == 321
    assert dns.answered == 1
    assert server.requests_to("/files/pinned.jpg")[-1].headers["host"] == f"photos.test:{server.port}"


async def test_name_resolving_to_a_private_address_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", OneShotDns("photos.test", "10.1.2.3"))
    reader = HttpOrigin(allow_hosts=frozenset({"photos.test"}))
    try:
        with pytest.raises(HostNotAllowed, match="10.1.2.3"):
            await reader.stat("https://photos.test/a.jpg")
    finally:
        await reader.aclose()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("fd00::1", False),  # ULA
        ("169.254.169.254", False),  # cloud metadata
        ("fe80::1", False),
        ("224.0.0.1", False),
        ("ff02::1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("240.0.0.1", False),  # reserved
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# --- validate_url ----------------------------------------------------------------------------

ALLOW = frozenset(
    {"res.cloudinary.com", "*.cdn.example", "bücher.example", "photos.example:8080", "*.img.example:8443"}
)


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        (
            "https://res.cloudinary.com/demo/image/upload/x.jpg",
            "https://res.cloudinary.com/demo/image/upload/x.jpg",
        ),
        ("HTTPS://Res.Cloudinary.COM./a/../x.jpg?w=1", "https://res.cloudinary.com/x.jpg?w=1"),
        ("https://res.cloudinary.com:443/x.jpg", "https://res.cloudinary.com/x.jpg"),
        ("http://res.cloudinary.com:80/x.jpg", "http://res.cloudinary.com/x.jpg"),
        ("http://photos.example:8080/x.jpg", "http://photos.example:8080/x.jpg"),
        ("https://eu.img.example:8443/x.jpg", "https://eu.img.example:8443/x.jpg"),
        ("https://eu.cdn.example/x.jpg", "https://eu.cdn.example/x.jpg"),
        ("https://a.b.cdn.example/x.jpg", "https://a.b.cdn.example/x.jpg"),
        ("https://BÜCHER.example/x.jpg", "https://xn--bcher-kva.example/x.jpg"),
        ("https://xn--bcher-kva.example/x.jpg", "https://xn--bcher-kva.example/x.jpg"),
    ],
)
def test_validate_url_accepts(url: str, normalised: str) -> None:
    assert validate_url(url, allow_hosts=ALLOW) == normalised
    assert validate_url(normalised, allow_hosts=ALLOW) == normalised  # idempotent


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://res.cloudinary.com/x.jpg", HostNotAllowed),
        ("file:///etc/passwd", HostNotAllowed),
        ("https://user:pw@res.cloudinary.com/x.jpg", HostNotAllowed),
        ("https://res.cloudinary.com@evil.example/x.jpg", HostNotAllowed),
        ("https://evil.example/x.jpg", HostNotAllowed),
        ("https://cdn.example/x.jpg", HostNotAllowed),  # the wildcard is for subdomains only
        ("https://evilcdn.example/x.jpg", HostNotAllowed),
        ("https://res.cloudinary.com.evil.example/x.jpg", HostNotAllowed),
        ("https://res.cloudinary.com/x.jpg#frag", HostNotAllowed),
        ("http://127.0.0.1/x.jpg", HostNotAllowed),
        ("http://res.cloudinary.com:8080/x.jpg", HostNotAllowed),  # a bare host: its default port only
        ("https://photos.example/x.jpg", HostNotAllowed),  # "photos.example:8080": that port only
        ("https://eu.img.example/x.jpg", HostNotAllowed),
        ("https://res.cloudinary.com/" + "a" * MAX_URL_CHARS, InvalidParameter),
        ("not a url", InvalidParameter),
        ("/relative/x.jpg", InvalidParameter),
        ("https://", InvalidParameter),
        ("https://res.cloudinary.com:99999/x.jpg", InvalidParameter),
        ("https://res.cloudinary.com:0/x.jpg", InvalidParameter),
        ("https://res.cloudinary.com/x\n.jpg", InvalidParameter),
        ("https://evil.example\\@res.cloudinary.com/", InvalidParameter),
        ("http://[::1/x.jpg", InvalidParameter),
    ],
)
def test_validate_url_refuses(url: str, error: type[ZipedgeError]) -> None:
    with pytest.raises(error) as caught:
        validate_url(url, allow_hosts=ALLOW)
    assert type(caught.value) is error
    assert "pw" not in caught.value.message  # credentials are never echoed


def test_allow_list_entries_must_be_hosts() -> None:
    assert normalise_allow_hosts(
        [
            " Res.Cloudinary.COM. ",
            "*.CDN.example",
            "::1",
            "",
            "Photos.Example:8080",
            "[::1]:9000",
            "h.example:443",
        ]
    ) == {"res.cloudinary.com", "*.cdn.example", "::1", "photos.example:8080", "[::1]:9000", "h.example:443"}
    for bad in ["res.cloudinary.com/path", "res.cloudinary.com:99999", "user@host", "host:port"]:
        with pytest.raises(ConfigError):
            normalise_allow_hosts([bad])
    with pytest.raises(ConfigError):
        HttpOrigin(allow_hosts=frozenset({"https://res.cloudinary.com"}))


# --- faults that cannot be made for real (respx) ------------------------------------------

CDN = "https://res.cloudinary.test"
URL = f"{CDN}/demo/image/upload/v1/plate.jpg"
DATA = photo(1000, seed=7)


class Body(httpx.AsyncByteStream):
    """A response body that may fail after its parts, and remembers being closed."""

    def __init__(self, *parts: bytes, error: Exception | None = None) -> None:
        self.parts, self.error, self.closed = parts, error, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def cdn() -> Iterator[respx.MockRouter]:
    # Patches httpcore: requests from the origin's own client never reach a socket.
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def mocked(cdn: respx.MockRouter) -> AsyncIterator[HttpOrigin]:
    reader = HttpOrigin(allow_hosts=frozenset({"res.cloudinary.test"}))
    yield reader
    await reader.aclose()


def ok(body: Body | bytes = DATA, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    stream = body if isinstance(body, Body) else Body(body)
    length = len(DATA) if isinstance(body, Body) else len(body)
    return httpx.Response(
        status, headers={"Content-Length": str(length), "ETag": '"v1"', **(headers or {})}, stream=stream
    )


async def test_reset_mid_body_is_retryable_and_resumes(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    broken = Body(DATA[:400], error=httpx.ReadError("connection reset by peer"))

    def answer(request: httpx.Request) -> httpx.Response:
        if "range" not in request.headers:
            return ok(broken)
        assert request.headers["if-range"] == '"v1"'
        return ok(DATA[400:], 206, {"Content-Range": f"bytes 400-999/{len(DATA)}"})

    cdn.get(URL).mock(side_effect=answer)
    received: list[bytes] = []
    with pytest.raises(SourceUnavailable, match="ReadError") as caught:
        async with contextlib.aclosing(mocked.read(URL, etag="v1")) as chunks:
            async for chunk in chunks:
                received.append(chunk)
    assert caught.value.retryable
    assert broken.closed
    assert b"".join(received) == DATA[:400]

    rest = await read_all(mocked, URL, offset=400, etag="v1")
    assert b"".join(received + rest) == DATA


async def test_read_timeout_mid_body(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    cdn.get(URL).mock(return_value=ok(Body(DATA[:10], error=httpx.ReadTimeout("timed out"))))
    with pytest.raises(SourceUnavailable, match="ReadTimeout"):
        await read_all(mocked, URL)


async def test_body_shorter_than_content_length(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    cdn.get(URL).mock(return_value=ok(Body(DATA[:600])))
    with pytest.raises(SourceUnavailable, match="600 of 1000"):
        await read_all(mocked, URL)


@pytest.mark.parametrize("error", [httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ConnectError])
async def test_connect_failures_are_retryable(
    cdn: respx.MockRouter, mocked: HttpOrigin, error: type[Exception]
) -> None:
    cdn.head(URL).mock(side_effect=error)
    cdn.get(URL).mock(side_effect=error)
    with pytest.raises(SourceUnavailable):
        await mocked.stat(URL)
    with pytest.raises(SourceUnavailable):
        await read_all(mocked, URL)


async def test_whole_body_answering_a_range(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    cdn.get(URL).mock(return_value=ok())  # same ETag: the origin just ignores Range
    with pytest.raises(ObjectChanged, match="no range support"):
        await read_all(mocked, URL, offset=100, etag="v1")


async def test_whole_body_with_another_etag_answering_a_range(
    cdn: respx.MockRouter, mocked: HttpOrigin
) -> None:
    cdn.get(URL).mock(return_value=ok(headers={"ETag": '"v2"'}))  # If-Range did not match
    with pytest.raises(ObjectChanged, match="v2"):
        await read_all(mocked, URL, offset=100, etag="v1")


async def test_range_starting_elsewhere(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    cdn.get(URL).mock(return_value=ok(DATA, 206, {"Content-Range": f"bytes 0-999/{len(DATA)}"}))
    with pytest.raises(SourceError, match="Content-Range start 0"):
        await read_all(mocked, URL, offset=100, etag="v1")


async def test_resume_at_the_very_end(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    cdn.get(URL).mock(return_value=httpx.Response(416, headers={"Content-Range": "bytes */1000"}))
    assert await read_all(mocked, URL, offset=1000, etag="v1") == []
    with pytest.raises(ObjectChanged):
        await read_all(mocked, URL, offset=1200, etag="v1")


async def test_gzip_is_refused(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    cdn.head(URL).respond(200, headers={"Content-Length": "321", "Content-Encoding": "gzip"})
    cdn.get(URL).mock(return_value=ok(headers={"Content-Encoding": "gzip"}))
    with pytest.raises(SourceError, match="gzip") as caught:
        await mocked.stat(URL)
    assert not caught.value.retryable
    with pytest.raises(SourceError, match="gzip") as caught:
        await read_all(mocked, URL)
    assert not caught.value.retryable
    assert cdn.calls.last.request.headers["accept-encoding"] == "identity"


async def test_head_without_length_uses_content_range(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    validators = {"ETag": 'W/"weak"', "Last-Modified": "Sun, 05 Jan 2025 08:30:15 GMT"}
    cdn.head(URL).respond(200, headers=validators)  # chunked on GET, so no length on HEAD
    probe = Body(DATA[:1])
    cdn.get(URL).mock(
        return_value=httpx.Response(
            206,
            headers={"Content-Range": "bytes 0-0/1000", "Content-Length": "1", **validators},
            stream=probe,
        )
    )
    info = await mocked.stat(URL)
    assert (info.size, info.etag, info.mtime) == (1000, "W/weak", 1_736_065_815)
    assert cdn.calls.last.request.headers["range"] == "bytes=0-0"
    assert probe.closed


async def test_a_weak_etag_cannot_be_resumed(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    route = cdn.get(URL).mock(
        return_value=ok(DATA[5:], 206, {"ETag": 'W/"weak"', "Content-Range": "bytes 5-999/1000"})
    )
    with pytest.raises(SourceError, match="no strong ETag"):
        await read_all(mocked, URL, offset=5, etag="W/weak")
    assert not route.called


async def test_last_modified_is_the_validator_without_etag_but_not_resumable(
    cdn: respx.MockRouter, mocked: HttpOrigin
) -> None:
    date = "Sun, 05 Jan 2025 08:30:15 GMT"
    cdn.head(URL).respond(200, headers={"Content-Length": "1000", "Last-Modified": date})
    route = cdn.get(URL).mock(
        return_value=httpx.Response(
            206,
            headers={"Content-Range": "bytes 5-999/1000", "Content-Length": "995", "Last-Modified": date},
            stream=Body(DATA[5:]),
        )
    )
    info = await mocked.stat(URL)
    assert info.etag == date
    # A date is a weak validator (two writes in one second look the same): no resume.
    with pytest.raises(SourceError, match="no strong ETag"):
        await read_all(mocked, URL, offset=5, etag=info.etag)
    assert not route.called


@pytest.mark.parametrize(
    ("status", "error"),
    [(408, SourceUnavailable), (429, SourceUnavailable), (502, SourceUnavailable), (401, SourceError)],
)
async def test_status_mapping(
    cdn: respx.MockRouter, mocked: HttpOrigin, status: int, error: type[SourceError]
) -> None:
    cdn.get(URL).respond(status)
    with pytest.raises(error) as caught:
        await read_all(mocked, URL)
    assert caught.value.retryable is error.retryable


async def test_stopping_early_closes_the_response(cdn: respx.MockRouter, mocked: HttpOrigin) -> None:
    body = Body(DATA[:500], DATA[500:])
    cdn.get(URL).mock(return_value=ok(body))
    async with contextlib.aclosing(mocked.read(URL)) as chunks:
        async for _ in chunks:
            break
    assert body.closed


async def test_injected_client_is_left_open(cdn: respx.MockRouter) -> None:
    cdn.head(URL).respond(200, headers={"Content-Length": "5"})
    async with httpx.AsyncClient(follow_redirects=True) as client:
        reader = HttpOrigin(allow_hosts=frozenset({"res.cloudinary.test"}), client=client)
        assert (await reader.stat(URL)).size == 5
        await reader.aclose()
        assert not client.is_closed
