from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.s3_fixtures", "tests.redis_fixtures"]


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests build Settings from explicit mappings; nothing leaks in from the shell."""
    for name in list(os.environ):
        if name.startswith(("ZIPEDGE_", "AWS_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    yield
