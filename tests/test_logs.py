"""`ZIPEDGE_LOG_FORMAT=json`: `zipedge serve` writes one JSON object per line, uvicorn's
access log included, with trace ids once tracing is on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.exceptions import ConfigError
from service.settings import Settings, log_format_of
from service.stack.ports import free_port
from service.stack.redis import RedisServer
from tests.web.test_api import write_files


def serve_json(tmp_path: Path, *args: str, **env: str) -> tuple[list[dict[str, Any]], str]:
    """Start `zipedge serve` with JSON logs, stream a day and stop it: its stderr lines,
    each parsed, and the archive's ETag."""
    root = tmp_path / "photos"
    write_files(root)
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("ZIPEDGE_", "AWS_", "OTEL_"))} | {
        "ZIPEDGE_SOURCE": f"file://{root}",
        "ZIPEDGE_CACHE": "",
        "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
        "ZIPEDGE_LOG_FORMAT": "json",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "zipedge serve did not start"
            time.sleep(0.1)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/zip", params={"from": "2025-01-01", "to": "2025-01-01"}
        )
        assert answer.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no log lines"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed, answer.headers["etag"]


def test_zipedge_serve_logs_json_lines(tmp_path: Path) -> None:
    lines, _ = serve_json(tmp_path)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
        assert line["time"].endswith("Z") and "T" in line["time"]
    messages = [(line["logger"], line["message"]) for line in lines]
    assert any(logger == "zipedge" and message.startswith("zipedge: serving") for logger, message in messages)
    assert any(logger == "uvicorn.error" and "Uvicorn running" in message for logger, message in messages)
    access = [
        line
        for line in lines
        if line["logger"] == "uvicorn.access" and line.get("path", "").startswith("/v1/zip")
    ]
    assert len(access) == 1
    assert (access[0]["method"], access[0]["status"], access[0]["http_version"]) == ("GET", 200, "1.1")
    assert access[0]["client"].startswith("127.0.0.1:")
    assert "trace_id" not in access[0]  # tracing is off


def test_json_lines_carry_trace_ids_when_tracing_is_on(tmp_path: Path) -> None:
    # A collector that is not there: spans are dropped at export, the ids are in the logs.
    lines, _ = serve_json(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_SERVICE_NAME="zipedge-test",
    )
    assert any(line["message"].startswith("tracing: spans go to") for line in lines)
    access = [
        line
        for line in lines
        if line["logger"] == "uvicorn.access" and line.get("path", "").startswith("/v1/zip")
    ]
    assert len(access) == 1
    assert len(access[0]["trace_id"]) == 32 and len(access[0]["span_id"]) == 16


def test_every_worker_logs_json_and_traces(tmp_path: Path, private_redis_server: RedisServer) -> None:
    # Workers are spawned processes: each sets up its own logging and tracer.
    lines, _ = serve_json(
        tmp_path,
        "--workers",
        "2",
        ZIPEDGE_REDIS_URL=private_redis_server.url,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
    )
    assert any(
        line["message"].startswith("zipedge: serving") and "2 processes" in line["message"] for line in lines
    )
    assert sum(line["message"].startswith("tracing: spans go to") for line in lines) >= 2
    access = [
        line
        for line in lines
        if line["logger"] == "uvicorn.access" and line.get("path", "").startswith("/v1/zip")
    ]
    assert len(access) == 1
    assert len(access[0]["trace_id"]) == 32


def test_settings_of_logs_and_traces() -> None:
    base = {"ZIPEDGE_SOURCE": "file:///tmp", "ZIPEDGE_CACHE": ""}
    default = Settings.from_env(base)
    assert (default.log_format, default.otel_endpoint, default.otel_service_name) == ("text", "", "zipedge")
    on = Settings.from_env(
        base
        | {
            "ZIPEDGE_LOG_FORMAT": "JSON",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SERVICE_NAME": "zipedge-eu",
        }
    )
    assert (on.log_format, on.otel_endpoint, on.otel_service_name) == (
        "json",
        "http://collector:4318",
        "zipedge-eu",
    )
    assert log_format_of({"ZIPEDGE_LOG_FORMAT": "json"}) == "json"
    with pytest.raises(ConfigError, match="ZIPEDGE_LOG_FORMAT"):
        log_format_of({"ZIPEDGE_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        Settings.from_env(base | {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})
