"""The process-wide objects a request needs, built once from `Settings` in the lifespan:
one S3 client (pool sized to the fetch concurrency), one HTTP origin client, one Redis
client, the source, the manifest store and the resolver."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis

from service.archive.manifest import Entry, Manifest
from service.constants import S3_POOL_HEADROOM
from service.exceptions import ConfigError, ZipedgeError
from service.manifests import FolderManifestStore, ManifestStore, RedisManifestStore
from service.resolver import Limits, Resolver
from service.settings import Settings
from service.sources.base import Reader, Source
from service.sources.folder import FolderSource
from service.sources.http import HttpOrigin
from service.writer import Progress, write_archive


@dataclass
class Runtime:
    settings: Settings
    source: Source
    origin: Reader | None
    manifests: ManifestStore
    redis: aioredis.Redis | None = None
    s3_client: Any = None
    active_streams: int = 0

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

    async def stream(self, manifest: Manifest) -> AsyncIterator[bytes]:
        """The archive's bytes; `StreamAborted` if an object cannot be read."""
        progress = Progress()
        self.active_streams += 1
        try:
            async for chunk in write_archive(
                manifest,
                self.open_entry,
                concurrency=self.settings.fetch_concurrency,
                budget=self.settings.prefetch_bytes,
                progress=progress,
            ):
                yield chunk
        finally:
            self.active_streams -= 1

    async def check(self) -> dict[str, str]:
        results: dict[str, str] = {}
        for name, probe in (("source", self.source.check), ("manifests", self.manifests.check)):
            try:
                await probe()
                results[name] = "ok"
            except ZipedgeError as exc:
                results[name] = exc.message
        return results


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

            source = S3Source(s3_client, bucket=settings.source.bucket, prefix=settings.source.prefix)
        else:
            source = FolderSource(settings.source.path)
        stack.push_async_callback(source.aclose)

        origin: Reader | None = None
        if settings.http_allow:
            origin = HttpOrigin(allow_hosts=settings.http_allow, allow_private=settings.http_allow_private)
            stack.push_async_callback(origin.aclose)

        redis: aioredis.Redis | None = None
        manifests: ManifestStore
        if settings.redis_url:
            redis = aioredis.Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            manifests = RedisManifestStore(redis)
        else:
            manifests = FolderManifestStore(settings.data_dir / "manifests")

        yield Runtime(
            settings=settings,
            source=source,
            origin=origin,
            manifests=manifests,
            redis=redis,
            s3_client=s3_client,
        )
