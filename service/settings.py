"""Configuration: read once from the environment into one typed, frozen object.

Nothing else in zipedge reads `os.environ`. Bad values fail at startup with a
`ConfigError` that names the variable, never on the first request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service import constants
from service.access import AuthSettings, LimitSettings
from service.environment import RATE_LIMITED_ACTIONS, Environment, Location, Network
from service.exceptions import ConfigError
from service.sources.urlguard import normalise_allow_hosts

__all__ = [
    "RATE_LIMITED_ACTIONS",
    "AuthSettings",
    "LimitSettings",
    "Location",
    "Network",
    "S3Settings",
    "Settings",
]


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where S3 is and how to reach it; None fields fall back to botocore's own chain
    (environment, profile, instance or container role)."""

    endpoint_url: str | None
    region: str | None
    access_key: str | None
    secret_key: str | None
    #: connect and per-read timeout (ZIPEDGE_S3_TIMEOUT_S)
    timeout_s: float = constants.DEFAULT_S3_TIMEOUT_S

    @property
    def signing_region(self) -> str:
        return self.region or "us-east-1"

    @property
    def origin(self) -> str:
        """The endpoint presigned URLs are signed for."""
        return self.endpoint_url or f"https://s3.{self.signing_region}.amazonaws.com"

    @property
    def path_style(self) -> bool:
        # SeaweedFS/MinIO endpoints have no per-bucket DNS names.
        return bool(self.endpoint_url)


@dataclass(frozen=True, slots=True)
class Settings:
    source: Location
    cache: Location | None
    data_dir: Path  #: embedded-mode state (posted manifests) when there is no Redis
    redis_url: str
    public_url: str
    http_allow: frozenset[str]
    http_allow_private: bool
    max_range_days: int
    max_entries: int
    max_bytes: int
    fetch_concurrency: int
    prefetch_bytes: int
    stream_max_bytes: int
    stream_max_entries: int
    worker_concurrency: int
    job_heartbeat_s: int
    job_sweep_s: int
    job_retry_delay_s: int
    lock_ttl_s: int
    redirect_window_s: int
    redirect_min_validity_s: int
    finish_on_disconnect: bool
    max_builds: int
    s3: S3Settings
    # --- uploads and listing freshness (see `_upload_settings`) ---
    #: where uploads wait until completed; never under a day prefix (ZIPEDGE_STAGING)
    staging: Location = field(default_factory=lambda: Location("file", Path("/nonexistent"), "", ""))
    upload_max_bytes: int = constants.DEFAULT_UPLOAD_MAX_BYTES
    upload_types: tuple[str, ...] = constants.DEFAULT_UPLOAD_TYPES
    upload_ttl_s: int = constants.DEFAULT_UPLOAD_TTL_S
    upload_grace_s: int = constants.DEFAULT_UPLOAD_GRACE_S
    #: the S3 endpoint browsers and cameras PUT to (signed for its host); "" = the
    #: client's endpoint, or AWS's virtual-hosted one (ZIPEDGE_UPLOAD_ENDPOINT)
    upload_endpoint: str = ""
    listing_max_stale_s: int = constants.DEFAULT_LISTING_MAX_STALE_S
    #: connect and per-read timeout towards HTTP origins (ZIPEDGE_HTTP_TIMEOUT_S)
    http_timeout_s: int = int(constants.HTTP_READ_TIMEOUT_S)
    #: how long a posted archive stays downloadable after its last POST (seconds)
    manifest_ttl_s: int = constants.DEFAULT_MANIFEST_TTL_S
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    #: where the processes of `zipedge serve --workers N` keep their metrics, so /metrics
    #: adds them up (prometheus_client's multiprocess mode; PROMETHEUS_MULTIPROC_DIR)
    metrics_dir: Path | None = None
    # --- observability (see `_observability_settings`) ---
    #: "text" or "json": one JSON object per log line (ZIPEDGE_LOG_FORMAT)
    log_format: str = "text"
    #: the OTLP/HTTP collector's base URL; "" = no traces (OTEL_EXPORTER_OTLP_ENDPOINT)
    otel_endpoint: str = ""
    #: the service name on every span (OTEL_SERVICE_NAME)
    otel_service_name: str = "zipedge"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> Settings:
        env = Environment(os.environ if environ is None else environ)
        text, integer = env.text, env.integer
        base = (cwd or Path.cwd()).resolve()

        source = Location.parse("ZIPEDGE_SOURCE", text("ZIPEDGE_SOURCE") or f"file://{base / 'var' / 'demo'}")
        cache_raw = env.raw.get("ZIPEDGE_CACHE")
        if cache_raw is None:
            cache_raw = f"file://{base / 'var' / 'cache'}"
        cache = Location.parse("ZIPEDGE_CACHE", cache_raw.strip()) if cache_raw.strip() else None

        s3 = S3Settings(
            endpoint_url=text("AWS_ENDPOINT_URL") or None,
            region=text("AWS_REGION") or text("AWS_DEFAULT_REGION") or None,
            access_key=text("AWS_ACCESS_KEY_ID") or None,
            secret_key=text("AWS_SECRET_ACCESS_KEY") or None,
            timeout_s=integer("ZIPEDGE_S3_TIMEOUT_S", constants.DEFAULT_S3_TIMEOUT_S),
        )
        redis_url = env.url("ZIPEDGE_REDIS_URL", ("redis", "rediss", "unix"))
        public_url = env.url("ZIPEDGE_PUBLIC_URL", ("http", "https"))

        hosts = normalise_allow_hosts(h for h in text("ZIPEDGE_HTTP_ALLOW").split(",") if h.strip())

        data_dir = Path(text("ZIPEDGE_DATA_DIR") or base / "var")
        if not data_dir.is_absolute():
            data_dir = base / data_dir

        return cls(
            source=source,
            cache=cache,
            data_dir=data_dir,
            redis_url=redis_url,
            public_url=public_url.rstrip("/"),
            http_allow=hosts,
            http_allow_private=env.flag("ZIPEDGE_HTTP_ALLOW_PRIVATE"),
            max_range_days=integer("ZIPEDGE_MAX_RANGE_DAYS", constants.DEFAULT_MAX_RANGE_DAYS),
            max_entries=integer("ZIPEDGE_MAX_ENTRIES", constants.DEFAULT_MAX_ENTRIES),
            max_bytes=integer("ZIPEDGE_MAX_BYTES", constants.DEFAULT_MAX_BYTES),
            fetch_concurrency=integer("ZIPEDGE_FETCH_CONCURRENCY", constants.DEFAULT_FETCH_CONCURRENCY),
            prefetch_bytes=integer(
                "ZIPEDGE_PREFETCH_BYTES", constants.DEFAULT_PREFETCH_BYTES, constants.READ_CHUNK_BYTES
            ),
            stream_max_bytes=integer("ZIPEDGE_STREAM_MAX_BYTES", constants.DEFAULT_STREAM_MAX_BYTES),
            stream_max_entries=integer("ZIPEDGE_STREAM_MAX_ENTRIES", constants.DEFAULT_STREAM_MAX_ENTRIES),
            worker_concurrency=integer("ZIPEDGE_WORKER_CONCURRENCY", constants.DEFAULT_WORKER_CONCURRENCY),
            job_heartbeat_s=integer("ZIPEDGE_JOB_HEARTBEAT_S", constants.JOB_HEARTBEAT_S),
            job_sweep_s=integer("ZIPEDGE_JOB_SWEEP_S", constants.JOB_SWEEP_S),
            job_retry_delay_s=integer("ZIPEDGE_JOB_RETRY_DELAY_S", int(constants.JOB_RETRY_DELAY_S)),
            lock_ttl_s=integer("ZIPEDGE_LOCK_TTL_S", int(constants.LOCK_TTL_S), 3),
            redirect_window_s=integer("ZIPEDGE_REDIRECT_WINDOW_S", constants.DEFAULT_REDIRECT_WINDOW_S),
            redirect_min_validity_s=integer(
                "ZIPEDGE_REDIRECT_MIN_VALIDITY_S", constants.DEFAULT_REDIRECT_MIN_VALIDITY_S
            ),
            finish_on_disconnect=env.choice("ZIPEDGE_TEE_ON_DISCONNECT", ("finish", "abort")) == "finish",
            max_builds=integer("ZIPEDGE_MAX_BUILDS", constants.DEFAULT_MAX_BUILDS, 0),
            s3=s3,
            **_upload_settings(env, source),
            http_timeout_s=integer("ZIPEDGE_HTTP_TIMEOUT_S", int(constants.HTTP_READ_TIMEOUT_S)),
            manifest_ttl_s=integer("ZIPEDGE_MANIFEST_TTL_S", constants.DEFAULT_MANIFEST_TTL_S, 60),
            auth=AuthSettings.from_env(env),
            limits=LimitSettings.from_env(env),
            metrics_dir=Path(metrics_dir) if (metrics_dir := text(METRICS_DIR_VARIABLE)) else None,
            **_observability_settings(env),
        )

    @property
    def upload_origin(self) -> str:
        """The origin browsers PUT upload bodies to when storage receives them directly
        (the page's CSP allows it for connect-src); "" when the service receives them."""
        if self.staging.scheme != "s3":
            return ""
        endpoint = self.upload_endpoint or self.s3.endpoint_url
        if endpoint:
            parts = urlsplit(endpoint)
            return f"{parts.scheme}://{parts.netloc}"
        return f"https://{self.staging.bucket}.s3.{self.s3.signing_region}.amazonaws.com"

    @property
    def staging_in_source(self) -> str:
        """Where staging lies inside the source root (`_staging/`), "" when outside: keys
        under it are pending uploads, not objects anyone may name in an archive."""
        staging, source = self.staging, self.source
        if staging.scheme == "file" and staging.path.is_relative_to(source.path):
            return staging.path.relative_to(source.path).as_posix().rstrip("/") + "/"
        if (
            staging.scheme == "s3"
            and staging.bucket == source.bucket
            and staging.prefix.startswith(source.prefix)
        ):
            return staging.prefix[len(source.prefix) :]
        return ""

    @property
    def uses_s3(self) -> bool:
        return self.source.scheme == "s3" or (self.cache is not None and self.cache.scheme == "s3")


#: The variable prometheus_client reads when it is imported: every process writes its
#: metrics as files there, and any of them can add them all up.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def pass_to_workers(name: str, value: str) -> None:
    """Set `name` for the processes this one is about to start (uvicorn's workers inherit
    the environment), the one write to it: some libraries read it only at import time."""
    os.environ[name] = value


_DAY_FOLDER = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9]{2}(/|$)")


def _staging_location(env: Environment, source: Location) -> Location:
    raw = env.text("ZIPEDGE_STAGING")
    if not raw:
        if source.scheme == "file":
            return Location("file", source.path / "_staging", "", "")
        return Location("s3", Path(), source.bucket, f"{source.prefix}_staging/")
    staging = Location.parse("ZIPEDGE_STAGING", raw)
    if staging.scheme != source.scheme:
        raise ConfigError("ZIPEDGE_STAGING: must be the same kind of storage as ZIPEDGE_SOURCE")
    # Relative to the source root, staging must not be a day (or inside one): every
    # archive of that day would then list the pending photos.
    inside: str | None = None
    if staging.scheme == "file" and staging.path.is_relative_to(source.path):
        inside = staging.path.relative_to(source.path).as_posix()
    elif (
        staging.scheme == "s3"
        and staging.bucket == source.bucket
        and staging.prefix.startswith(source.prefix)
    ):
        inside = staging.prefix[len(source.prefix) :]
    if inside is not None and (inside in ("", ".") or _DAY_FOLDER.match(inside)):
        raise ConfigError(
            "ZIPEDGE_STAGING: must not be the source root or under a day prefix (YYYY/MM/DD/) of it"
        )
    return staging


LOG_FORMATS = ("text", "json")


def log_format_of(environ: Mapping[str, str] | None = None) -> str:
    """ZIPEDGE_LOG_FORMAT alone: the CLI sets up logging before any other setting is read
    (and for commands that need no other)."""
    return Environment(os.environ if environ is None else environ).choice("ZIPEDGE_LOG_FORMAT", LOG_FORMATS)


def _observability_settings(env: Environment) -> dict[str, Any]:
    return {
        "log_format": env.choice("ZIPEDGE_LOG_FORMAT", LOG_FORMATS),
        # The standard OpenTelemetry variables, so a collector's usual setup applies.
        "otel_endpoint": env.url("OTEL_EXPORTER_OTLP_ENDPOINT", ("http", "https")).rstrip("/"),
        "otel_service_name": env.text("OTEL_SERVICE_NAME") or "zipedge",
    }


def _upload_settings(env: Environment, source: Location) -> dict[str, Any]:
    types = tuple(t.strip().lower() for t in env.text("ZIPEDGE_UPLOAD_TYPES").split(",") if t.strip())
    for kind in types:
        if "/" not in kind or any(c in kind for c in " ;,"):
            raise ConfigError(f"ZIPEDGE_UPLOAD_TYPES: {kind!r} is not a content type")
    return {
        "staging": _staging_location(env, source),
        "upload_max_bytes": env.integer("ZIPEDGE_UPLOAD_MAX_BYTES", constants.DEFAULT_UPLOAD_MAX_BYTES),
        "upload_types": types or constants.DEFAULT_UPLOAD_TYPES,
        "upload_ttl_s": env.integer("ZIPEDGE_UPLOAD_TTL_S", constants.DEFAULT_UPLOAD_TTL_S),
        "upload_grace_s": env.integer("ZIPEDGE_UPLOAD_GRACE_S", constants.DEFAULT_UPLOAD_GRACE_S),
        "upload_endpoint": env.url("ZIPEDGE_UPLOAD_ENDPOINT", ("http", "https")).rstrip("/"),
        "listing_max_stale_s": env.integer(
            "ZIPEDGE_LISTING_MAX_STALE_S", constants.DEFAULT_LISTING_MAX_STALE_S
        ),
    }
