"""Signed download links: a URL a browser can open with no header.

    /v1/zip?from=2025-01-01&to=2025-01-05&sub=alice&expires=1767229200&sig=<base64url>

`sig` is HMAC-SHA256 (ZIPEDGE_LINK_SECRET) over the path, the canonical selection (every
other query parameter, sorted), the subject and `expires`. `expires` is rounded up to the
end of the next `ZIPEDGE_LINK_TTL_S` window, so one selection gives one byte-identical link
per window (shareable, and a CDN can cache what it answers), valid between one and two
windows. Anything changed — path, selection, subject, expiry — or an expired link is a
`Forbidden`. A link acts for its subject with the `download` scope only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from service.exceptions import Forbidden

#: The query parameters the signature adds; everything else is the selection it signs.
SUBJECT, EXPIRES, SIGNATURE = "sub", "expires", "sig"
_RESERVED = frozenset({SUBJECT, EXPIRES, SIGNATURE})


@dataclass(frozen=True, slots=True)
class SignedLink:
    query: str  #: the whole query string, selection first
    expires: int  #: Unix seconds


def _canonical(params: Iterable[tuple[str, str]]) -> str:
    return urlencode(sorted((k, v) for k, v in params if k not in _RESERVED))


class LinkSigner:
    def __init__(self, secret: str, *, ttl_s: int) -> None:
        self._key = secret.encode()
        self._ttl_s = ttl_s

    def expiry(self, now: float | None = None) -> int:
        """The end of the window after the current one (Unix seconds)."""
        now = time.time() if now is None else now
        return (int(now) // self._ttl_s + 2) * self._ttl_s

    def _signature(self, path: str, selection: str, subject: str, expires: int) -> str:
        message = f"zipedge-link-v1\n{path}\n{selection}\n{subject}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(
        self, path: str, params: Iterable[tuple[str, str]], subject: str, *, now: float | None = None
    ) -> SignedLink:
        selection = _canonical(params)
        expires = self.expiry(now)
        sig = self._signature(path, selection, subject, expires)
        tail = urlencode([(SUBJECT, subject), (EXPIRES, str(expires)), (SIGNATURE, sig)])
        return SignedLink(f"{selection}&{tail}" if selection else tail, expires)

    def verify(self, path: str, params: list[tuple[str, str]], *, now: float | None = None) -> str:
        """The subject of a valid link to `path`; `Forbidden` otherwise."""
        found = {k: v for k, v in params if k in _RESERVED}
        if sum(1 for k, _ in params if k in _RESERVED) != len(found) or len(found) != len(_RESERVED):
            raise Forbidden("a signed link needs exactly one sub, expires and sig")
        subject, expires_raw, sig = found[SUBJECT], found[EXPIRES], found[SIGNATURE]
        if not expires_raw.isdigit() or len(expires_raw) > 12:
            raise Forbidden("the link's expiry is malformed")
        expires = int(expires_raw)
        expected = self._signature(path, _canonical(params), subject, expires)
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "surrogateescape")):
            raise Forbidden("the link's signature does not match (it was changed, or is for another path)")
        if (time.time() if now is None else now) >= expires:
            raise Forbidden("the link has expired: ask for a new one")
        return subject
