"""Bearer tokens (PyJWT: HS256, RS256, ES256) and signed links, without a server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.exceptions import ConfigError, Forbidden, Unauthorized
from service.links import LinkSigner
from service.settings import Settings
from service.tokens import TokenVerifier

SECRET = "s" * 32


def token(claims: dict[str, Any] | None = None, key: Any = SECRET, algorithm: str = "HS256") -> str:
    base: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 600, "scope": "download upload"}
    return jwt.encode({**base, **(claims or {})}, key, algorithm=algorithm)


def pem(public: Any) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_a_good_token_gives_its_subject_and_known_scopes() -> None:
    verifier = TokenVerifier(secret=SECRET)
    assert verifier.verify(token({"scope": "download admin frobnicate"})) == (
        "alice",
        frozenset({"download", "admin"}),
    )
    assert verifier.verify(token({"scope": ["upload"]}))[1] == {"upload"}
    assert verifier.verify(token({"scope": None}))[1] == frozenset()


@pytest.mark.parametrize(
    ("claims", "key", "why"),
    [
        ({}, "t" * 32, "does not verify"),  # bad signature
        ({"exp": int(time.time()) - 120}, SECRET, "expired"),
        # far ahead: the time is taken at collection, long before the test may run
        ({"nbf": int(time.time()) + 30 * 86400}, SECRET, "not valid yet"),
        ({"sub": None}, SECRET, "'sub'"),
        ({"sub": 5}, SECRET, "does not verify"),
        ({"exp": None}, SECRET, "'exp'"),
    ],
)
def test_bad_tokens_are_unauthorized(claims: dict[str, Any], key: str, why: str) -> None:
    raw = token({k: v for k, v in claims.items() if v is not None}, key)
    if None in claims.values():  # drop the claim entirely
        payload = jwt.decode(raw, key, algorithms=["HS256"], options={"verify_signature": False})
        for name, value in claims.items():
            if value is None:
                payload.pop(name, None)
        raw = jwt.encode(payload, key, algorithm="HS256")
    with pytest.raises(Unauthorized, match=why):
        TokenVerifier(secret=SECRET).verify(raw)


def test_audience_and_issuer_are_required_when_configured() -> None:
    verifier = TokenVerifier(secret=SECRET, audience="zipedge", issuer="https://id.example")
    good = {"aud": "zipedge", "iss": "https://id.example"}
    assert verifier.verify(token(good))[0] == "alice"
    with pytest.raises(Unauthorized, match="aud"):
        verifier.verify(token({**good, "aud": "other"}))
    with pytest.raises(Unauthorized, match="iss"):
        verifier.verify(token({**good, "iss": "https://evil.example"}))
    with pytest.raises(Unauthorized, match="'aud'"):
        verifier.verify(token({"iss": "https://id.example"}))


def test_garbage_is_unauthorized() -> None:
    for raw in ["", "x", "a.b.c", "e30.e30."]:
        with pytest.raises(Unauthorized):
            TokenVerifier(secret=SECRET).verify(raw)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_public_keys_verify_their_own_algorithm_only(kind: str) -> None:
    private: Any
    if kind == "rsa":
        private, algorithm = rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
    else:
        private, algorithm = ec.generate_private_key(ec.SECP256R1()), "ES256"
    public_pem = pem(private.public_key())
    verifier = TokenVerifier(public_key=public_pem)
    assert verifier.verify(token(key=private, algorithm=algorithm))[0] == "alice"
    # The classic confusion: an HS256 token "signed" with the public key as the secret.
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(b'{"sub":"mallory","exp":9999999999}').rstrip(b"=")
    mac = hmac.new(public_pem.encode(), head + b"." + body, hashlib.sha256).digest()
    forged = b".".join([head, body, base64.urlsafe_b64encode(mac).rstrip(b"=")]).decode()
    with pytest.raises(Unauthorized):
        verifier.verify(forged)
    with pytest.raises(Unauthorized):  # alg "none"
        verifier.verify(jwt.encode({"sub": "mallory", "exp": 9999999999}, None, algorithm="none"))


def test_settings_check_the_keys_at_startup(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        Settings.from_env({"ZIPEDGE_AUTH_JWT_SECRET": "short"})
    with pytest.raises(ConfigError, match="PEM"):
        Settings.from_env(
            {
                "ZIPEDGE_AUTH_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnope\n",
                "ZIPEDGE_LINK_SECRET": SECRET,
            }
        )
    key = pem(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(ConfigError, match="ZIPEDGE_LINK_SECRET"):
        Settings.from_env({"ZIPEDGE_AUTH_JWT_PUBLIC_KEY": key})
    path = tmp_path / "key.pem"
    path.write_text(key)
    auth = Settings.from_env({"ZIPEDGE_AUTH_JWT_PUBLIC_KEY": str(path), "ZIPEDGE_LINK_SECRET": SECRET}).auth
    assert auth.enabled and auth.jwt_public_key == key
    plain = Settings.from_env({"ZIPEDGE_AUTH_JWT_SECRET": SECRET}).auth
    assert plain.link_secret == SECRET and plain.link_ttl_s == 3600
    assert not Settings.from_env({}).auth.enabled
    with pytest.raises(ConfigError, match="unknown action"):
        Settings.from_env({"ZIPEDGE_RATE_LIMITS": "dowload=3/minute"})
    with pytest.raises(ConfigError, match="30/minute"):
        Settings.from_env({"ZIPEDGE_RATE_LIMITS": "download=lots"})
    limits = Settings.from_env({"ZIPEDGE_RATE_LIMITS": "download=30/minute, job=10/hour"}).limits
    assert limits.rate_limits == (("download", "30/minute"), ("job", "10/hour"))


# --- signed links -----------------------------------------------------------------------------

SIGNER = LinkSigner(SECRET, ttl_s=3600)
SELECTION = [("from", "2025-01-01"), ("to", "2025-01-05")]


def params(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query, keep_blank_values=True)


def test_a_link_verifies_for_its_path_and_gives_its_subject() -> None:
    link = SIGNER.sign("/v1/zip", SELECTION, "alice")
    assert link.query.startswith("from=2025-01-01&to=2025-01-05&sub=alice&expires=")
    assert SIGNER.verify("/v1/zip", params(link.query)) == "alice"
    # The order of the selection does not matter: it is signed in canonical form.
    reordered = "&".join(reversed(link.query.split("&")))
    assert SIGNER.verify("/v1/zip", params(reordered)) == "alice"


def test_one_selection_gives_one_link_per_window() -> None:
    start = 1_767_225_600  # a window boundary
    first = SIGNER.sign("/v1/zip", SELECTION, "alice", now=start + 1)
    last = SIGNER.sign("/v1/zip", SELECTION, "alice", now=start + 3599)
    assert first == last and first.expires == start + 7200  # valid one to two windows
    assert SIGNER.sign("/v1/zip", SELECTION, "alice", now=start + 3600) != first


@pytest.mark.parametrize(
    "tamper",
    [
        lambda q: q.replace("to=2025-01-05", "to=2025-12-31"),  # a larger selection
        lambda q: q.replace("sub=alice", "sub=bob"),  # another subject
        lambda q: q.replace("expires=", "expires=1"),  # a later expiry
        lambda q: q + "&name=x",  # an added parameter
        lambda q: q.replace("sig=", "sig=A"),
        lambda q: q + "&sig=again",  # two signatures
        lambda q: q.replace("&sub=alice", ""),
    ],
)
def test_a_tampered_link_is_forbidden(tamper: Any) -> None:
    query = SIGNER.sign("/v1/zip", SELECTION, "alice").query
    with pytest.raises(Forbidden):
        SIGNER.verify("/v1/zip", params(tamper(query)))


def test_a_link_is_for_its_path_its_key_and_its_time() -> None:
    query = SIGNER.sign("/v1/zip", SELECTION, "alice").query
    with pytest.raises(Forbidden):
        SIGNER.verify("/v1/archives/0123456789abcdef0123456789abcdef.zip", params(query))
    with pytest.raises(Forbidden):
        LinkSigner("k" * 32, ttl_s=3600).verify("/v1/zip", params(query))
    old = SIGNER.sign("/v1/zip", SELECTION, "alice", now=time.time() - 3 * 3600)
    with pytest.raises(Forbidden, match="expired"):
        SIGNER.verify("/v1/zip", params(old.query))
