"""Bearer tokens: a JWT verified with PyJWT becomes a `Caller`.

HS256 with a shared secret (ZIPEDGE_AUTH_JWT_SECRET), or RS256 / ES256 with the issuer's
public key (ZIPEDGE_AUTH_JWT_PUBLIC_KEY, PEM). A token must carry `sub` (the client) and
`exp`; `nbf` is honoured when present, `aud` and `iss` are required when configured.
`scope` is space separated (or a list): `download`, `upload`, `admin`; others are ignored.

Only the algorithm the key is for is accepted, so a token cannot choose its own (`none`,
or HS256 signed with the public key as the secret).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.constants import JWT_LEEWAY_S, TOKEN_MEMO
from service.exceptions import ConfigError, Unauthorized
from service.identity import ALL_SCOPES

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_public_key(pem: str) -> PublicKey:
    """The key of ZIPEDGE_AUTH_JWT_PUBLIC_KEY; `ConfigError` unless RSA or EC."""
    try:
        key = load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ConfigError(f"ZIPEDGE_AUTH_JWT_PUBLIC_KEY: not a PEM public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError("ZIPEDGE_AUTH_JWT_PUBLIC_KEY: an RSA (RS256) or EC (ES256) public key is needed")
    return key


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", "")
    items = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return frozenset(item for item in items if isinstance(item, str)) & ALL_SCOPES


class TokenVerifier:
    """Verifies bearer tokens; remembers the last `TOKEN_MEMO` good ones (their expiry is
    still checked on every use), so a client's next request costs no signature check."""

    def __init__(
        self, *, secret: str = "", public_key: str = "", audience: str = "", issuer: str = ""
    ) -> None:
        self._key: str | PublicKey
        if public_key:
            self._key = load_public_key(public_key)
            self._algorithms = ["RS256"] if isinstance(self._key, rsa.RSAPublicKey) else ["ES256"]
        else:
            self._key, self._algorithms = secret, ["HS256"]
        self._audience = audience or None
        self._issuer = issuer or None
        required = ["exp", "sub", *(["aud"] if audience else []), *(["iss"] if issuer else [])]
        self._options: Any = {"require": required}
        self._memo: OrderedDict[str, tuple[str, frozenset[str], float]] = OrderedDict()

    def verify(self, token: str) -> tuple[str, frozenset[str]]:
        """(sub, scopes) of a valid token; `Unauthorized` saying why otherwise."""
        now = time.time()
        known = self._memo.get(token)
        if known is not None:
            sub, scopes, expires = known
            if now < expires + JWT_LEEWAY_S:
                return sub, scopes
            del self._memo[token]
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=JWT_LEEWAY_S,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not for this service (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token is from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"the token does not verify ({type(exc).__name__})") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("the token's 'sub' must be a non-empty string")
        scopes = scopes_of(claims)
        self._memo[token] = (sub, scopes, float(claims["exp"]))
        if len(self._memo) > TOKEN_MEMO:
            self._memo.popitem(last=False)
        return sub, scopes
