"""Settings: read once from the environment; bad values stop startup with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.exceptions import ConfigError
from service.settings import Settings


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)
    assert str(settings.source) == f"file://{tmp_path.resolve()}/var/demo"
    assert settings.cache is not None and settings.cache.scheme == "file"
    assert settings.redis_url == "" and settings.http_allow == frozenset()
    assert settings.max_range_days == 366 and settings.finish_on_disconnect


def test_s3_locations_and_overrides() -> None:
    settings = Settings.from_env(
        {
            "ZIPEDGE_SOURCE": "s3://photos/gate7/",
            "ZIPEDGE_CACHE": "",
            "ZIPEDGE_HTTP_ALLOW": "res.cloudinary.com, *.example.test",
            "ZIPEDGE_MAX_RANGE_DAYS": "31",
            "ZIPEDGE_PREFETCH_BYTES": "64_000_000",
            "ZIPEDGE_TEE_ON_DISCONNECT": "ABORT",
        }
    )
    assert (settings.source.bucket, settings.source.prefix) == ("photos", "gate7/")
    assert settings.cache is None
    assert settings.http_allow == {"res.cloudinary.com", "*.example.test"}
    assert settings.max_range_days == 31 and settings.prefetch_bytes == 64_000_000
    assert not settings.finish_on_disconnect


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ZIPEDGE_SOURCE", "ftp://host/x", "unknown scheme"),
        ("ZIPEDGE_SOURCE", "s3:///prefix", "needs a bucket"),
        ("ZIPEDGE_SOURCE", "file://relative/dir", "absolute path"),
        ("ZIPEDGE_CACHE", "gs://bucket", "unknown scheme"),
        ("ZIPEDGE_REDIS_URL", "http://127.0.0.1:6379", "ZIPEDGE_REDIS_URL"),
        ("ZIPEDGE_PUBLIC_URL", "cdn.example.test", "ZIPEDGE_PUBLIC_URL"),
        ("ZIPEDGE_MAX_RANGE_DAYS", "a week", "whole number"),
        ("ZIPEDGE_MAX_RANGE_DAYS", "0", "at least 1"),
        ("ZIPEDGE_PREFETCH_BYTES", "1000", "at least"),
        ("ZIPEDGE_HTTP_ALLOW_PRIVATE", "maybe", "true or false"),
        ("ZIPEDGE_TEE_ON_DISCONNECT", "later", "finish, abort"),
        ("ZIPEDGE_LOCK_TTL_S", "1", "at least 3"),
    ],
)
def test_bad_values_fail_at_startup_naming_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert variable in caught.value.message and message in caught.value.message
