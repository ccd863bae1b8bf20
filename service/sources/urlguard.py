"""The gates an HTTP origin URL passes, each closing a way to make the service fetch what
it should not (`HttpOrigin` in `http.py` applies them):

1. `validate_url`, at request time (400): http(s) only, no credentials, no fragment, a sane
   port, and a host on the allow list (`ZIPEDGE_HTTP_ALLOW`; `*.example.com` = any subdomain;
   `host:port` allows that port, a bare host only the scheme's default port, 80 or 443).
   The URL is parsed by httpx itself, so the host we check is the host httpx connects to
   (no parser differential such as `https://evil\\@good/`).
2. Every connection resolves the host once, refuses loopback, private, link-local
   (169.254.169.254), multicast, unspecified and reserved addresses (unless `allow_private`),
   and connects to the very address it checked (`PinnedTransport`). A DNS answer that
   changes between the check and the connect (rebinding) therefore cannot send us
   elsewhere; TLS SNI, certificate checks and the Host header still use the name.
3. Redirects are followed by hand (in `http.py`), each target passing gate 1 again.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from service.constants import MAX_URL_CHARS
from service.exceptions import ConfigError, HostNotAllowed, InvalidParameter

__all__ = [
    "AddressRefused",
    "PinnedTransport",
    "is_public_address",
    "normalise_allow_hosts",
    "validate_url",
]

#: NAT64's well-known prefix embeds an IPv4 address that a NAT64 gateway would reach.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


#: The port a URL without one connects to.
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_allow_hosts(entries: Iterable[str]) -> frozenset[str]:
    """The allow list in the form `validate_url` compares with: lower case, IDNA (punycode),
    no trailing dot; `*.` kept on wildcard entries; `:port` kept when given (IPv6 addresses
    in brackets then). Raises `ConfigError` on an entry that is not a host name or IP
    address with an optional port (call it at startup to fail early)."""
    return _normalise_allow(frozenset(entries))


def _entry(host: str, port: int | None) -> str:
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=16)
def _normalise_allow(entries: frozenset[str]) -> frozenset[str]:
    # Cached: validate_url runs once per posted entry (up to 100k) with the same few hosts.
    normalised: set[str] = set()
    for entry in entries:
        raw = entry.strip()
        if not raw:
            continue
        wildcard = raw.startswith("*.")
        name = raw[2:] if wildcard else raw
        if name.count(":") > 1 and not name.startswith("["):
            name = f"[{name}]"  # a bare IPv6 address
        try:
            # A scheme without a default port, so an explicit :80 or :443 is kept as given.
            parsed = httpx.URL(f"zipedge://{name}/")
        except httpx.InvalidURL as exc:
            raise ConfigError(f"HTTP allow list: {entry!r} is not a host name ({exc})") from exc
        host = parsed.raw_host.decode("ascii").removesuffix(".")
        if not host or parsed.userinfo or parsed.raw_path != b"/":
            raise ConfigError(f"HTTP allow list: {entry!r} is not a host name with an optional port")
        if parsed.port is not None and not 1 <= parsed.port <= 65535:
            raise ConfigError(f"HTTP allow list: {entry!r}: port out of range")
        normalised.add(_entry(f"*.{host}" if wildcard else host, parsed.port))
    return frozenset(normalised)


def _host_allowed(host: str, port: int, default_port: bool, allow: frozenset[str]) -> bool:
    # "*.example.com" allows every subdomain at any depth, not example.com itself.
    labels = host.split(".")
    names = [host, *(f"*.{'.'.join(labels[i:])}" for i in range(1, len(labels)))]
    # A bare entry means the scheme's default port only; "host:port" that port.
    return any(_entry(name, port) in allow or (default_port and name in allow) for name in names)


def validate_url(url: str, *, allow_hosts: frozenset[str]) -> str:
    """The normalised form of `url` (lower-case scheme and host, punycode, no trailing dot,
    no default port, dot segments resolved), or `HostNotAllowed` / `InvalidParameter`.

    Pure: no DNS. Address checks happen when connecting (see `HttpOrigin`)."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidParameter(f"URL longer than {MAX_URL_CHARS} characters")
    if any(ch <= " " or ch in "\x7f\\" for ch in url):
        # httpx would quietly percent-encode these; a real photo URL never has them raw.
        raise InvalidParameter(f"URL contains whitespace, control characters or a backslash: {url!r}")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidParameter(f"malformed URL {url!r}: {exc}") from exc
    if not parsed.scheme:
        raise InvalidParameter(f"not an absolute URL: {url!r}")
    if parsed.scheme not in ("http", "https"):
        raise HostNotAllowed(f"URL scheme {parsed.scheme!r} not allowed (http or https only): {url!r}")
    if parsed.userinfo:
        raise HostNotAllowed("URLs with credentials (user:password@) are not allowed")  # not echoed back
    if "#" in url:
        raise HostNotAllowed(f"URLs with a fragment (#...) are not allowed: {url!r}")
    host = parsed.raw_host.decode("ascii").removesuffix(".")
    if not host:
        raise InvalidParameter(f"URL has no host: {url!r}")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise InvalidParameter(f"URL port {parsed.port} out of range: {url!r}")
    default = _DEFAULT_PORTS[parsed.scheme]
    port = parsed.port or default
    if not _host_allowed(host, port, port == default, _normalise_allow(allow_hosts)):
        where = host if port == default else _entry(host, port)
        raise HostNotAllowed(f"{where!r} is not in the HTTP allow list (ZIPEDGE_HTTP_ALLOW)")
    return str(parsed.copy_with(host=host))


def is_public_address(address: str) -> bool:
    """Whether an IP address may be fetched from: not loopback, private (RFC 1918, ULA),
    shared (CGNAT), link-local (cloud metadata), multicast, unspecified or reserved,
    also when wrapped in an IPv4-mapped, NAT64 or 6to4 IPv6 address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip.sixtofour is not None and not is_public_address(str(ip.sixtofour)):
            return False
    # is_global alone lets multicast through (224.0.0.0/4 and ff00::/8 are "global").
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_reserved
    )


class AddressRefused(Exception):
    """Raised inside the transport; the boundary turns it into HostNotAllowed or SourceError."""


class _PinningBackend(httpcore.AsyncNetworkBackend):
    """Resolves once, checks every address, then connects to a checked address itself."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port, limit_s=timeout)
        if not self._allow_private:
            for address in addresses:
                # Refuse the host if any answer is internal: a name mixing public and private
                # addresses is an attack or a misconfiguration, never a photo CDN.
                if not is_public_address(address):
                    raise AddressRefused(f"host {host!r} resolves to the non-public address {address}")
        failure: Exception | None = None
        # In the resolver's order (RFC 6724), each with the full connect timeout; no happy eyeballs.
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # _resolve never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("HTTP origins never use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, *, limit_s: float | None) -> list[str]:
    try:
        async with asyncio.timeout(limit_s):
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from exc
    except (OSError, UnicodeError) as exc:
        # Mapped by httpx to ConnectError, hence SourceUnavailable: DNS failures are often brief.
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise httpcore.ConnectError(f"{host!r} has no address")
    return addresses


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, connecting through `_PinningBackend`.

    httpx 0.28 takes no network backend, but its transport hands every request to
    `self._pool`, so we replace that pool with an identical one built with ours. httpx
    0.28 is pinned in pyproject.toml, so this seam does not
    move; tests/sources/test_http.py checks the guard end to end through a real socket.
    """

    def __init__(self, *, allow_private: bool, limits: httpx.Limits) -> None:
        ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinningBackend(allow_private=allow_private),
        )
