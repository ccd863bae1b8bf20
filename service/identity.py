"""Who is asking: the caller of a request, as the rest of the service sees it.

`Caller.sub` names the client (a token's `sub`, or the client address when no
authentication is configured); `scopes` are what it may do. Jobs, uploads and posted
archives record the `sub` that made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The scopes a token can grant.
DOWNLOAD = "download"
UPLOAD = "upload"
ADMIN = "admin"
ALL_SCOPES = frozenset({DOWNLOAD, UPLOAD, ADMIN})


@dataclass(frozen=True, slots=True)
class Caller:
    #: the client: a token's `sub`, or "" for an anonymous caller
    sub: str = ""
    scopes: frozenset[str] = field(default_factory=frozenset)
    #: where the request came from (the client address, through trusted proxies)
    address: str = ""

    @property
    def admin(self) -> bool:
        return ADMIN in self.scopes

    @property
    def client_id(self) -> str:
        """What limits and quotas count by: the subject, else the address."""
        return self.sub or self.address or "anonymous"

    def owns(self, owner: str) -> bool:
        """Whether something recorded with `owner` is this caller's to see (admin: all)."""
        return self.admin or owner == self.sub


#: With no authentication configured every caller may do everything (the embedded
#: default, for loopback or a trusted network).
UNAUTHENTICATED = Caller(sub="", scopes=ALL_SCOPES)
