"""Redirect URLs are signed with the credentials of the moment: role credentials expire,
and a URL signed with the ones the process started with would stop working."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from service.cache.s3 import RedirectSigning, S3ArchiveCache
from service.s3.client import S3
from service.settings import S3Settings
from service.sigv4 import Credentials


class Rotating:
    def __init__(self) -> None:
        self.generation = 0

    async def current(self) -> Credentials:
        g = self.generation
        return Credentials(f"AKIA{g}", f"secret{g}", f"token{g}")


def cache_with(credentials: Rotating) -> S3ArchiveCache:
    config = S3Settings("http://127.0.0.1:8333", "us-east-1", None, None)
    s3 = S3(config=config, client=cast(Any, None), getter=cast(Any, None), credentials=credentials)
    signing = RedirectSigning(window_s=3600, min_validity_s=3600, public_url="")
    return S3ArchiveCache(s3, bucket="cache", prefix="archives/", signing=signing)


async def test_each_window_signs_with_the_current_credentials() -> None:
    credentials = Rotating()
    cache = cache_with(credentials)
    first = await cache.url("0" * 32, "a.zip", base_url="http://service/")
    assert await cache.url("0" * 32, "a.zip", base_url="http://service/") == first  # stable
    credentials.generation = 1  # the role's credentials were refreshed
    second = await cache.url("0" * 32, "a.zip", base_url="http://service/")
    query = parse_qs(urlsplit(second).query)
    assert query["X-Amz-Credential"][0].startswith("AKIA1/")
    assert query["X-Amz-Security-Token"] == ["token1"]
    assert second != first
