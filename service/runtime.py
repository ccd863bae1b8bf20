"""The process-wide objects a request needs, built once from `Settings` in the lifespan:
one S3 client (pool sized to the fetch concurrency), one HTTP origin client, one Redis
client, the source, the manifest store, the archive cache and the build lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis import asyncio as aioredis

from service.archive.manifest import Entry, Manifest
from service.cache.lock import BuildLock, LocalBuildLock, RedisBuildLock
from service.cache.store import (
    ArchiveCache,
    CachedArchive,
    CacheWriteFailed,
    FolderArchiveCache,
    S3ArchiveCache,
    S3Signing,
)
from service.cache.tee import Build, Tee
from service.constants import REDIS_SOCKET_TIMEOUT_S, S3_POOL_HEADROOM, TEE_MAX_LAG_BYTES
from service.exceptions import ConfigError, DependencyUnavailable, ZipedgeError
from service.listing import DayListingCache
from service.manifests import FolderManifestStore, ManifestStore, RedisManifestStore
from service.metrics import CACHE_LOOKUPS
from service.resolver import Limits, Resolver
from service.settings import Settings
from service.sigv4 import Credentials
from service.sources.base import Reader, Source
from service.sources.folder import FolderSource
from service.sources.http import HttpOrigin
from service.writer import Progress, write_archive

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    source: Source
    origin: Reader | None
    manifests: ManifestStore
    cache: ArchiveCache | None = None
    lock: BuildLock = field(default_factory=LocalBuildLock)
    redis: aioredis.Redis | None = None
    s3_client: Any = None
    active_streams: int = 0
    builds: set[Build] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.resolver = Resolver(
            self.source,
            self.origin,
            source_id=str(self.settings.source),
            limits=Limits(self.settings.max_entries, self.settings.max_bytes),
            http_allow=self.settings.http_allow,
        )

    def open_entry(self, entry: Entry, offset: int) -> AsyncIterator[bytes]:
        if entry.kind == "url":
            if self.origin is None:
                raise ConfigError("URL entries need ZIPEDGE_HTTP_ALLOW")
            return self.origin.read(entry.ref, offset=offset, etag=entry.etag)
        return self.source.read(entry.ref, offset=offset, etag=entry.etag)

    def write(self, manifest: Manifest, progress: Progress | None = None) -> AsyncIterator[bytes]:
        return write_archive(
            manifest,
            self.open_entry,
            concurrency=self.settings.fetch_concurrency,
            budget=self.settings.prefetch_bytes,
            progress=progress,
        )

    async def cached(self, manifest: Manifest) -> CachedArchive | None:
        """The cache object of this manifest, if built. A cache that cannot be asked is
        treated as a miss: the source may still be fine to stream from."""
        if self.cache is None:
            return None
        try:
            found = await self.cache.lookup(manifest.archive_id)
        except DependencyUnavailable as exc:
            logger.warning("cache lookup failed, streaming instead: %s", exc.message)
            return None
        CACHE_LOOKUPS.labels("hit" if found else "miss").inc()
        return found

    async def _tee(self, manifest: Manifest) -> Tee | None:
        if self.cache is None:
            return None
        lease = await self.lock.try_acquire(manifest.archive_id)
        if lease is None:
            return None  # someone else is building it: stream without teeing
        try:
            writer = await self.cache.writer(manifest.archive_id, manifest.size, manifest.filename)
        except (CacheWriteFailed, DependencyUnavailable) as exc:
            logger.warning("cache write of %s not started: %s", manifest.archive_id, exc.message)
            await lease.release()
            return None
        return Tee(writer, lease, max_lag=TEE_MAX_LAG_BYTES, archive_id=manifest.archive_id)

    async def stream(self, manifest: Manifest) -> AsyncIterator[bytes]:
        """The archive's bytes for one client, teed into the cache when this stream wins
        the build lock. Raises `StreamAborted` if an object cannot be read."""
        self.active_streams += 1
        try:
            tee = await self._tee(manifest)
            if tee is None:
                async for chunk in self.write(manifest):
                    yield chunk
                return
            build = Build(self.write(manifest), tee)
            self.builds.add(build)
            build.task.add_done_callback(lambda _: self._forget(build))
            try:
                async for chunk in build.client_chunks():
                    yield chunk
            finally:
                build.detach(finish=self.settings.finish_on_disconnect)
        finally:
            self.active_streams -= 1

    def _forget(self, build: Build) -> None:
        # Keep the build referenced until its cache write is settled too.
        build.tee.task.add_done_callback(lambda _: self.builds.discard(build))

    async def shutdown(self) -> None:
        """Stop background builds; their uploads are aborted, nothing partial remains."""
        for build in list(self.builds):
            build.detach(finish=False)
            build.tee.drop("shutting down")
        await asyncio.gather(*(b.wait() for b in list(self.builds)), return_exceptions=True)

    async def check(self) -> dict[str, str]:
        probes: dict[str, Any] = {"source": self.source.check, "manifests": self.manifests.check}
        if self.cache is not None:
            probes["cache"] = self.cache.check
        if self.redis is not None:
            probes["redis"] = self._ping_redis
        results: dict[str, str] = {}
        for name, probe in probes.items():
            try:
                await probe()
                results[name] = "ok"
            except ZipedgeError as exc:
                results[name] = exc.message
        return results

    async def _ping_redis(self) -> None:
        assert self.redis is not None
        try:
            await self.redis.ping()
        except Exception as exc:  # any failure here means "not ready"
            raise DependencyUnavailable(f"redis: {exc}") from exc


def _credentials(settings: Settings, client: Any) -> Callable[[], Awaitable[Credentials]]:
    if settings.s3.access_key and settings.s3.secret_key:
        fixed = Credentials(settings.s3.access_key, settings.s3.secret_key)

        async def explicit() -> Credentials:
            return fixed

        return explicit
    from service.sources.s3_get import client_credentials

    return client_credentials(client)


async def _s3_cache(settings: Settings, client: Any) -> S3ArchiveCache:
    assert settings.cache is not None
    endpoint = settings.s3.endpoint_url
    region = settings.s3.region or "us-east-1"
    origin = endpoint or f"https://s3.{region}.amazonaws.com"
    credentials = None
    if settings.s3.access_key and settings.s3.secret_key:
        credentials = Credentials(settings.s3.access_key, settings.s3.secret_key)
    signing = S3Signing(
        origin=origin,
        region=region,
        window_s=settings.redirect_window_s,
        min_validity_s=settings.redirect_min_validity_s,
        public_url=settings.public_url,
        path_style=bool(endpoint),
        credentials=credentials,
    )
    cache = S3ArchiveCache(
        client, bucket=settings.cache.bucket, prefix=settings.cache.prefix, signing=signing
    )
    await cache.prepare()
    return cache


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    async with contextlib.AsyncExitStack() as stack:
        s3_client: Any = None
        if settings.uses_s3:
            from service.sources.s3 import open_s3_client

            s3_client = await stack.enter_async_context(
                open_s3_client(
                    endpoint_url=settings.s3.endpoint_url,
                    region=settings.s3.region,
                    access_key=settings.s3.access_key,
                    secret_key=settings.s3.secret_key,
                    max_pool_connections=settings.fetch_concurrency + S3_POOL_HEADROOM,
                )
            )
        source: Source
        if settings.source.scheme == "s3":
            from service.sources.s3 import S3Source
            from service.sources.s3_get import open_object_getter

            getter = await stack.enter_async_context(
                open_object_getter(
                    endpoint_url=settings.s3.endpoint_url,
                    region=settings.s3.region or "us-east-1",
                    credentials=_credentials(settings, s3_client),
                    max_connections=settings.fetch_concurrency + S3_POOL_HEADROOM,
                )
            )
            source = S3Source(
                s3_client, bucket=settings.source.bucket, prefix=settings.source.prefix, getter=getter
            )
        else:
            source = FolderSource(settings.source.path)
        stack.push_async_callback(source.aclose)

        origin: Reader | None = None
        if settings.http_allow:
            origin = HttpOrigin(allow_hosts=settings.http_allow, allow_private=settings.http_allow_private)
            stack.push_async_callback(origin.aclose)

        redis: aioredis.Redis | None = None
        manifests: ManifestStore
        lock: BuildLock
        if settings.redis_url:
            # Short timeouts: a Redis outage must degrade requests, not hang them.
            redis = aioredis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            )
            stack.push_async_callback(redis.aclose)
            manifests = RedisManifestStore(redis)
            lock = RedisBuildLock(redis, ttl_s=settings.lock_ttl_s)
        else:
            manifests = FolderManifestStore(settings.data_dir / "manifests")
            lock = LocalBuildLock()

        if settings.source.scheme == "s3":
            # Day listings cached in process and shared through Redis, so a repeat click
            # costs no S3 LIST. Not the folder: listing it is cheap, and files dropped in by
            # hand must show up at once.
            listings = DayListingCache(source, source_id=str(settings.source), redis=redis)
            stack.push_async_callback(listings.aclose)
            source = listings

        cache: ArchiveCache | None = None
        if settings.cache is not None and settings.cache.scheme == "s3":
            cache = await _s3_cache(settings, s3_client)
        elif settings.cache is not None:
            cache = FolderArchiveCache(settings.cache.path)

        runtime = Runtime(
            settings=settings,
            source=source,
            origin=origin,
            manifests=manifests,
            cache=cache,
            lock=lock,
            redis=redis,
            s3_client=s3_client,
        )
        stack.push_async_callback(runtime.shutdown)
        yield runtime
