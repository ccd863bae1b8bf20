"""The process-wide objects, built once from `Settings` and closed together.

Wiring only: which adapter implements each interface in this configuration. One S3 bundle
(a pool sized to the fetch concurrency), one HTTP origin client, one Redis client; the
source, its listings (cached through Redis for S3, direct for a folder), the manifest
store, the archive cache and the build lock. Behaviour lives in `streams.py` and
`downloads.py`, which only see the interfaces.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.cache.base import ArchiveCache
from service.cache.lock import BuildLock, LocalBuildLock, RedisBuildLock
from service.constants import (
    REDIS_RETRIES,
    REDIS_RETRY_BACKOFF_BASE_S,
    REDIS_RETRY_BACKOFF_MAX_S,
    REDIS_SOCKET_TIMEOUT_S,
    S3_POOL_HEADROOM,
    UPLOAD_RECORD_SLACK_S,
)
from service.exceptions import DependencyUnavailable
from service.index import ObjectIndex
from service.index.memory import MemoryObjectIndex
from service.index.redis import RedisObjectIndex
from service.index.sqlite import SqliteObjectIndex
from service.linkkey import link_key
from service.listing import DayListingCache, DirectListings, Listings
from service.manifest_quota import ManifestQuota
from service.manifests import FolderManifestStore, ManifestStore, RedisManifestStore
from service.pending import PendingStore
from service.pending.memory import MemoryPendingStore
from service.s3.client import S3
from service.settings import Settings
from service.sources.base import Reader, Source
from service.staging import Staging


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    source: Source
    listings: Listings
    origin: Reader | None
    manifests: ManifestStore
    cache: ArchiveCache | None
    lock: BuildLock
    index: ObjectIndex = field(default_factory=MemoryObjectIndex)
    redis: aioredis.Redis | None = None
    s3: S3 | None = None
    #: uploads: their records, where their bodies wait, the key of the body URLs
    pending: PendingStore = field(default_factory=MemoryPendingStore)
    staging: Staging | None = None
    link_key: bytes = b""

    @property
    def source_id(self) -> str:
        """Names the source in archive ids, Redis keys and the object index."""
        return str(self.settings.source)

    def probes(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """What /readyz asks, by dependency name."""
        probes: dict[str, Callable[[], Awaitable[None]]] = {
            "source": self.source.check,
            "manifests": self.manifests.check,
            "index": self.index.check,
            "uploads": self.pending.check,
        }
        if self.cache is not None:
            probes["cache"] = self.cache.check
        if self.redis is not None:
            probes["redis"] = self._ping_redis
        return probes

    async def _ping_redis(self) -> None:
        assert self.redis is not None
        try:
            await self.redis.ping()
        except Exception as exc:  # any failure here means "not ready"
            raise DependencyUnavailable(f"redis: {exc}") from exc


def redis_client(url: str, *, socket_timeout: float | None = REDIS_SOCKET_TIMEOUT_S) -> aioredis.Redis:
    """Short timeouts: a Redis outage must degrade requests, not hang them. One retry on a
    dropped or timed-out connection: after Redis restarts, every pooled connection is dead
    and the first command on each would fail; the retry reconnects and succeeds."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_timeout=socket_timeout,
        retry=Retry(
            ExponentialBackoff(cap=REDIS_RETRY_BACKOFF_MAX_S, base=REDIS_RETRY_BACKOFF_BASE_S), REDIS_RETRIES
        ),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with contextlib.AsyncExitStack() as stack:
        s3: S3 | None = None
        if settings.uses_s3:
            from service.s3.client import open_s3

            s3 = await stack.enter_async_context(
                open_s3(settings.s3, max_connections=settings.fetch_concurrency + S3_POOL_HEADROOM)
            )

        redis: aioredis.Redis | None = None
        index: ObjectIndex
        if settings.redis_url:
            redis = redis_client(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            index = RedisObjectIndex(redis)
        else:
            index = SqliteObjectIndex(settings.data_dir / "index.sqlite3")
            stack.push_async_callback(index.aclose)

        source: Source
        listings: Listings
        if settings.source.scheme == "s3":
            from service.sources.s3 import S3Source

            assert s3 is not None
            source = S3Source(
                s3,
                bucket=settings.source.bucket,
                prefix=settings.source.prefix,
                hidden=settings.staging_in_source,
            )
            # Cached in process and shared through Redis, so a repeat click costs no LIST.
            listings = DayListingCache(
                source,
                source_id=str(settings.source),
                redis=redis,
                index=index,
                max_stale_s=settings.listing_max_stale_s,
            )
        else:
            from service.sources.folder import FolderSource

            source = FolderSource(settings.source.path, hidden=settings.staging_in_source)
            # Listing a folder is cheap, and files dropped in by hand must show up at once.
            listings = DirectListings(source, source_id=str(settings.source), index=index)
        stack.push_async_callback(source.aclose)
        stack.push_async_callback(listings.aclose)

        origin: Reader | None = None
        if settings.http_allow:
            from service.sources.http import HttpOrigin

            origin = HttpOrigin(
                allow_hosts=settings.http_allow,
                allow_private=settings.http_allow_private,
                timeout_s=settings.http_timeout_s,
            )
            stack.push_async_callback(origin.aclose)

        manifests: ManifestStore
        lock: BuildLock
        quota = ManifestQuota(
            max_count=settings.limits.max_archives_per_client,
            max_bytes=settings.limits.max_archive_bytes_per_client,
            ttl_s=settings.manifest_ttl_s,
        )
        if redis is not None:
            manifests = RedisManifestStore(redis, quota)
            lock = RedisBuildLock(redis, ttl_s=settings.lock_ttl_s)
        else:
            manifests = FolderManifestStore(settings.data_dir / "manifests", quota)
            lock = LocalBuildLock()

        cache: ArchiveCache | None = None
        if settings.cache is not None and settings.cache.scheme == "s3":
            from service.cache.s3 import RedirectSigning, S3ArchiveCache

            assert s3 is not None
            signing = RedirectSigning(
                window_s=settings.redirect_window_s,
                min_validity_s=settings.redirect_min_validity_s,
                public_url=settings.public_url,
            )
            cache = S3ArchiveCache(
                s3, bucket=settings.cache.bucket, prefix=settings.cache.prefix, signing=signing
            )
        elif settings.cache is not None:
            from service.cache.folder import FolderArchiveCache

            cache = FolderArchiveCache(settings.cache.path)

        pending, staging = _uploads(settings, source, redis, s3)
        stack.push_async_callback(pending.aclose)

        yield Runtime(
            settings=settings,
            source=source,
            listings=listings,
            origin=origin,
            manifests=manifests,
            cache=cache,
            lock=lock,
            index=index,
            redis=redis,
            s3=s3,
            pending=pending,
            staging=staging,
            link_key=link_key(settings.auth.link_secret, settings.data_dir),
        )


def _uploads(
    settings: Settings, source: Source, redis: aioredis.Redis | None, s3: S3 | None
) -> tuple[PendingStore, Staging]:
    """Upload records (Redis, else SQLite under the data dir) and staging (the bucket,
    else a folder beside the source's)."""
    pending: PendingStore
    if redis is not None:
        from service.pending.redis import RedisPendingStore

        ttl = settings.upload_grace_s + settings.upload_ttl_s + UPLOAD_RECORD_SLACK_S
        pending = RedisPendingStore(redis, record_ttl_s=ttl)
    else:
        from service.pending.sqlite import SqlitePendingStore

        pending = SqlitePendingStore(settings.data_dir / "uploads.sqlite3")
    staging: Staging
    if settings.staging.scheme == "s3":
        from service.staging.s3 import S3Staging

        assert s3 is not None
        staging = S3Staging(
            s3,
            bucket=settings.staging.bucket,
            prefix=settings.staging.prefix,
            source_bucket=settings.source.bucket,
            source_prefix=settings.source.prefix,
            upload_endpoint=settings.upload_endpoint,
        )
    else:
        from service.sources.folder import FolderSource
        from service.staging.folder import FolderStaging

        assert isinstance(source, FolderSource)
        staging = FolderStaging(settings.staging.path, source)
    return pending, staging
