"""Who is asking, and may they: the authentication middleware and the per-route guard.

`AuthMiddleware` (pure ASGI, so streams pass through untouched) puts a `Caller` into every
request's scope. With authentication configured, every `/v1/` request and `/metrics` need
`Authorization: Bearer <JWT>` (`service/tokens.py`) or, for a GET or HEAD, a valid signed
link (`service/links.py`): 401 without one that verifies, 403 for a bad or expired link.
The page, its static files, `/healthz` and `/readyz` stay open. Without authentication
every caller may do everything, and is still told apart by its address for the limits.

`guarded(endpoint, scope=..., action=...)` is what a route needs: the scope (403 without
it), then one hit of its action's rate limit (429).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.exceptions import Forbidden, Unauthorized, ZipedgeError
from service.identity import ALL_SCOPES, DOWNLOAD, Caller
from service.links import SIGNATURE, LinkSigner
from service.settings import AuthSettings, Network, Settings
from service.tokens import TokenVerifier
from service.web.context import CALLER_KEY, caller_of, services
from service.web.errors import error_for

Endpoint = Callable[[Request], Awaitable[Response]]

#: Paths that need an identity when authentication is on (the rest is the page).
_PROTECTED_PREFIXES = ("/v1/",)
_PROTECTED_PATHS = frozenset({"/metrics"})
#: The embedded default's upload body URL carries its own short-lived signature, which the
#: endpoint checks (a browser PUTs there with exactly the headers it was given, no token).
_SELF_SIGNED = re.compile(r"/v1/uploads/[^/]+/body")


@functools.lru_cache(maxsize=4)
def link_signer(auth: AuthSettings) -> LinkSigner | None:
    """The signer of download links, or None where links are not signed (no auth)."""
    if not auth.enabled:
        return None
    return LinkSigner(auth.link_secret, ttl_s=auth.link_ttl_s)


def client_address(scope: Scope, trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer's, or through trusted proxies the right-most
    X-Forwarded-For hop that is not one of them (hops to its left could be made up)."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not _is_trusted(peer, trusted):
        return peer
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
    hops = [hop.strip() for value in values for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return str(hop)
    return str(hops[0]) if hops else peer


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class AuthMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        auth = settings.auth
        self._enabled = auth.enabled
        self._trusted = settings.limits.trusted_proxies
        self._tokens = (
            TokenVerifier(
                secret=auth.jwt_secret,
                public_key=auth.jwt_public_key,
                audience=auth.audience,
                issuer=auth.issuer,
            )
            if auth.enabled
            else None
        )
        self._links = link_signer(auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        address = client_address(scope, self._trusted)
        if not self._enabled:
            scope[CALLER_KEY] = Caller(sub="", scopes=ALL_SCOPES, address=address)
        else:
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]  # links sign the route's own path
            protected = path.startswith(_PROTECTED_PREFIXES) or path in _PROTECTED_PATHS
            if protected and not (scope["method"] == "PUT" and _SELF_SIGNED.fullmatch(path)):
                try:
                    scope[CALLER_KEY] = self._authenticate(scope, path, address)
                except ZipedgeError as exc:
                    await error_for(exc)(scope, receive, send)
                    return
            else:
                scope[CALLER_KEY] = Caller(address=address)
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope, path: str, address: str) -> Caller:
        assert self._tokens is not None and self._links is not None
        authorization = ""
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                authorization = value.decode("latin-1")
                break
        if authorization:
            kind, _, token = authorization.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise Unauthorized("use Authorization: Bearer <token>")
            sub, scopes = self._tokens.verify(token.strip())
            return Caller(sub=sub, scopes=scopes, address=address)
        query: str = scope.get("query_string", b"").decode("latin-1")
        if query and scope["method"] in ("GET", "HEAD"):
            params = parse_qsl(query, keep_blank_values=True)
            if any(key == SIGNATURE for key, _ in params):
                subject = self._links.verify(path, params)
                return Caller(sub=subject, scopes=frozenset({DOWNLOAD}), address=address)
        raise Unauthorized("this needs a bearer token (Authorization: Bearer <token>) or a signed link")


def guarded(endpoint: Endpoint, *, scope: str, action: str | None = None) -> Endpoint:
    """`endpoint`, callable only by a caller with `scope`, counted against `action`'s limit."""

    @functools.wraps(endpoint)
    async def guard(request: Request) -> Response:
        caller = caller_of(request)
        if scope not in caller.scopes:
            raise Forbidden(f"this needs the {scope!r} scope")
        if action is not None:
            await services(request).quotas.hit(action, caller.client_id)
        return await endpoint(request)

    return guard


def sign_local(request: Request, url: str) -> str:
    """A URL of this service's own that a browser follows without our header (the folder
    cache's `/v1/cache/…`), signed for the caller when authentication is on."""
    signer = link_signer(services(request).runtime.settings.auth)
    if signer is None or "/v1/cache/" not in url:
        return url  # presigned S3 URLs (the usual redirect) need nothing
    parts = urlsplit(url)
    if not parts.path.startswith("/v1/cache/"):
        return url
    link = signer.sign(parts.path, parse_qsl(parts.query, keep_blank_values=True), caller_of(request).sub)
    return urlunsplit(parts._replace(query=link.query))
