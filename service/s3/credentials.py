"""One credentials provider for everything that signs S3 requests itself: the lean GETs and
listings, and the presigned redirect and upload URLs.

Explicit keys from the settings are used as they are. Otherwise botocore's provider chain
(environment, profile, container or instance role, STS web identity) resolves them, through
the public `AioSession.get_credentials()`; refreshable credentials refresh themselves on
`get_frozen_credentials()` shortly before they expire, so a URL signed an hour after
startup uses the credentials of that hour, not those the process started with.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiobotocore.session import AioSession

from service.exceptions import DependencyUnavailable
from service.sigv4 import Credentials


class CredentialsProvider(Protocol):
    async def current(self) -> Credentials:
        """Valid credentials now; `DependencyUnavailable` if there are none."""
        ...


class StaticCredentials:
    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials

    async def current(self) -> Credentials:
        return self._credentials


class SessionCredentials:
    """botocore's chain, resolved once, then asked for its (refreshed) frozen values."""

    def __init__(self, session: AioSession) -> None:
        self._session = session
        self._resolved: Any = None
        self._resolving = asyncio.Lock()
        self._last: tuple[Any, Credentials] | None = None

    async def current(self) -> Credentials:
        if self._resolved is None:
            async with self._resolving:
                if self._resolved is None:
                    self._resolved = await self._session.get_credentials()
        if self._resolved is None:
            raise DependencyUnavailable(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the "
                "process a role"
            )
        frozen = await self._resolved.get_frozen_credentials()
        # The same frozen tuple until a refresh: keep handing out one equal object, so the
        # presigned-URL memo (keyed by credentials) keeps hitting.
        if self._last is None or self._last[0] != frozen:
            self._last = (frozen, Credentials(frozen.access_key, frozen.secret_key, frozen.token))
        return self._last[1]
