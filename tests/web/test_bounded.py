"""Work bounded by what was asked: a posted archive looks each distinct object up once
(the keys of a busy day through its listing, not a HEAD each) and stops all of it when its
client leaves; a JSON body nested too deep is a 400 before it is decoded."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from service.app import create_app
from service.sources.base import ObjectInfo
from tests.servers import serve
from tests.web.test_api import make_settings

BUSY_DAY = "2025/03/01"


@dataclass
class CountingStat:
    """Wraps a source's `stat`: counts calls per key, how many run at once, and can be slow."""

    inner: Any
    delay_s: float = 0.0
    calls: Counter[str] = field(default_factory=Counter)
    running: int = 0

    async def __call__(self, key: str) -> ObjectInfo:
        self.calls[key] += 1
        self.running += 1
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            info: ObjectInfo = await self.inner(key)
            return info
        finally:
            self.running -= 1


@dataclass
class Service:
    url: str
    stat: CountingStat


def photos(root: Path, days: int, per_day: int, busy: int) -> list[str]:
    first = date(2020, 1, 1)  # one day per `d`, so `per_day` keys a day
    keys = [
        f"{first + timedelta(days=d):%Y/%m/%d}/CAR{d:03d}-{i:02d}.jpg"
        for d in range(days)
        for i in range(per_day)
    ]
    keys += [f"{BUSY_DAY}/BUSY{i:03d}.jpg" for i in range(busy)]
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    return keys


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    app = create_app(make_settings(tmp_path / "photos", tmp_path / "var"))
    (tmp_path / "photos").mkdir()
    with serve(app) as url:
        runtime = app.state.services.runtime
        stat = CountingStat(runtime.source.stat)
        runtime.source.stat = stat  # the resolver asks the source it was given
        yield Service(url, stat)


def test_a_large_post_looks_each_distinct_object_up_once(service: Service, tmp_path: Path) -> None:
    # 100,000 entries naming 140 objects: 100 of a busy day, 40 on days with few of them.
    keys = photos(tmp_path / "photos", days=20, per_day=2, busy=100)
    entries = [{"key": keys[i % len(keys)], "name": f"{i % 7}.jpg"} for i in range(100_000)]
    with httpx.Client(base_url=service.url, timeout=120) as client:
        created = client.post("/v1/archives", json={"entries": entries})
    assert created.status_code == 201, created.text
    assert created.json()["entries"] == 100_000
    quiet = [k for k in keys if not k.startswith(BUSY_DAY)]
    # One HEAD for each key of the quiet days, none for the busy day (its listing has them).
    assert service.stat.calls == Counter(quiet)


def test_a_key_missing_from_its_days_listing_is_still_looked_up(service: Service, tmp_path: Path) -> None:
    keys = photos(tmp_path / "photos", days=0, per_day=0, busy=20)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        missing = client.post(
            "/v1/archives", json={"entries": [{"key": k} for k in [*keys, f"{BUSY_DAY}/NEW.jpg"]]}
        )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "object_not_found"
    assert service.stat.calls == Counter({f"{BUSY_DAY}/NEW.jpg": 1})


def test_a_client_that_leaves_stops_the_resolve(service: Service, tmp_path: Path) -> None:
    keys = photos(tmp_path / "photos", days=400, per_day=5, busy=0)  # 2,000 keys, no busy day
    service.stat.delay_s = 0.05  # 2,000 lookups, 16 at a time: about 6 s if left to run
    body = json.dumps({"entries": [{"key": k} for k in keys]}).encode()
    address = urlsplit(service.url)
    with socket.create_connection((address.hostname, address.port)) as sock:
        head = (
            f"POST /v1/archives HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        deadline = time.monotonic() + 10
        while not service.stat.calls:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # The client is gone: every lookup stops, the rest never starts.
    deadline = time.monotonic() + 5
    while service.stat.running:
        assert time.monotonic() < deadline, "lookups still running after the client left"
        time.sleep(0.01)
    started = sum(service.stat.calls.values())
    time.sleep(0.5)
    assert sum(service.stat.calls.values()) == started < len(keys)


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 40 + b"1" + b"}" * 40])
def test_deeply_nested_json_is_400(service: Service, body: bytes) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        response = client.post("/v1/archives", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and "nests deeper" in response.json()["error"]["message"]


def test_brackets_inside_strings_do_not_count() -> None:
    from service.web.bodies import nesting

    assert nesting(b'{"entries": [{"key": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "n": "\\"{{{"}]}') == 3
    assert nesting(b"5") == 0
