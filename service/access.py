"""Who may use the service and how much: tokens and signed links, per-client limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from service import constants
from service.environment import Environment, Network
from service.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Bearer tokens and signed links. Neither key set: no authentication at all."""

    jwt_secret: str = ""  #: HS256 (ZIPEDGE_AUTH_JWT_SECRET)
    jwt_public_key: str = ""  #: RS256/ES256 PEM (ZIPEDGE_AUTH_JWT_PUBLIC_KEY)
    audience: str = ""
    issuer: str = ""
    #: HMAC key of signed links (ZIPEDGE_LINK_SECRET, else the JWT secret)
    link_secret: str = ""
    link_ttl_s: int = constants.DEFAULT_LINK_TTL_S

    @property
    def enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key)

    @classmethod
    def from_env(cls, env: Environment) -> AuthSettings:
        secret = env.text("ZIPEDGE_AUTH_JWT_SECRET")
        public_key = env.pem("ZIPEDGE_AUTH_JWT_PUBLIC_KEY")
        if secret and public_key:
            raise ConfigError("set ZIPEDGE_AUTH_JWT_SECRET or ZIPEDGE_AUTH_JWT_PUBLIC_KEY, not both")
        if secret and len(secret.encode()) < constants.MIN_SECRET_BYTES:
            raise ConfigError(f"ZIPEDGE_AUTH_JWT_SECRET: at least {constants.MIN_SECRET_BYTES} bytes")
        link_secret = env.text("ZIPEDGE_LINK_SECRET") or secret
        if public_key and not link_secret:
            raise ConfigError("ZIPEDGE_LINK_SECRET is needed with ZIPEDGE_AUTH_JWT_PUBLIC_KEY (signed links)")
        if link_secret and len(link_secret.encode()) < constants.MIN_SECRET_BYTES:
            raise ConfigError(f"ZIPEDGE_LINK_SECRET: at least {constants.MIN_SECRET_BYTES} bytes")
        auth = cls(
            jwt_secret=secret,
            jwt_public_key=public_key,
            audience=env.text("ZIPEDGE_AUTH_JWT_AUDIENCE"),
            issuer=env.text("ZIPEDGE_AUTH_JWT_ISSUER"),
            link_secret=link_secret,
            link_ttl_s=env.integer("ZIPEDGE_LINK_TTL_S", constants.DEFAULT_LINK_TTL_S, 60),
        )
        if public_key:
            from service.tokens import load_public_key

            load_public_key(public_key)  # a bad PEM fails here, at startup
        return auth


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Per-client rate limits and quotas (a client is a token's `sub`, else its address)."""

    #: (action, "30/minute") pairs; empty: no rate limit
    rate_limits: tuple[tuple[str, str], ...] = ()
    max_streams_per_client: int = constants.DEFAULT_MAX_STREAMS_PER_CLIENT
    max_jobs_per_client: int = constants.DEFAULT_MAX_JOBS_PER_CLIENT
    max_archives_per_client: int = constants.DEFAULT_MAX_ARCHIVES_PER_CLIENT
    max_archive_bytes_per_client: int = constants.DEFAULT_MAX_ARCHIVE_BYTES_PER_CLIENT
    #: addresses whose X-Forwarded-For names the client
    trusted_proxies: tuple[Network, ...] = field(
        default_factory=lambda: (ipaddress.ip_network(constants.DEFAULT_TRUSTED_PROXIES),)
    )

    @classmethod
    def from_env(cls, env: Environment) -> LimitSettings:
        return cls(
            rate_limits=env.rate_limits("ZIPEDGE_RATE_LIMITS"),
            max_streams_per_client=env.integer(
                "ZIPEDGE_MAX_STREAMS_PER_CLIENT", constants.DEFAULT_MAX_STREAMS_PER_CLIENT
            ),
            max_jobs_per_client=env.integer(
                "ZIPEDGE_MAX_JOBS_PER_CLIENT", constants.DEFAULT_MAX_JOBS_PER_CLIENT
            ),
            max_archives_per_client=env.integer(
                "ZIPEDGE_MAX_ARCHIVES_PER_CLIENT", constants.DEFAULT_MAX_ARCHIVES_PER_CLIENT
            ),
            max_archive_bytes_per_client=env.integer(
                "ZIPEDGE_MAX_ARCHIVE_BYTES_PER_CLIENT", constants.DEFAULT_MAX_ARCHIVE_BYTES_PER_CLIENT
            ),
            trusted_proxies=env.networks("ZIPEDGE_TRUSTED_PROXIES", constants.DEFAULT_TRUSTED_PROXIES),
        )
