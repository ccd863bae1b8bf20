"""`zipedge worker` stops when told to: on SIGTERM an idle worker exits with 0, without
its upkeep loops (abort, schedule, sweep, worker info) holding the shutdown until the
grace period runs out and saq cancels them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from service.stack.redis import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
#: Hang guards for what must happen, never timing assertions.
START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 120.0


def test_an_idle_worker_exits_on_sigterm(private_redis_server: RedisServer, tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    env = {
        "ZIPEDGE_REDIS_URL": private_redis_server.url,
        "ZIPEDGE_SOURCE": f"file://{tmp_path / 'photos'}",
        "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
        "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
        # An hour between sweeps: a pause that is not interrupted outlasts the grace period.
        "ZIPEDGE_JOB_SWEEP_S": "3600",
        "PATH": "/usr/bin:/bin",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "service", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = redis.Redis.from_url(private_redis_server.url)
        deadline = time.monotonic() + START_DEADLINE_S
        # The first sweep took its lock: the upkeep loops ran once and are now pausing.
        while not client.exists("saq:zipedge:sweep"):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        client.close()

        worker.send_signal(signal.SIGTERM)
        code = worker.wait(STOP_DEADLINE_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log.read_text()
    assert code == 0, text
    assert "shutting down" in text
    assert "did not finish within the shutdown grace period" not in text, text
    assert "Traceback" not in text, text
