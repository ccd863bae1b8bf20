"""How `zipedge` logs: text lines (the default) or one JSON object per line
(`ZIPEDGE_LOG_FORMAT=json`), uvicorn's error and access logs included.

A JSON line has `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`,
`trace_id` and `span_id` when the line was written inside a span (docs/operations.md,
"Tracing"), `exception` with the traceback when there is one, and for uvicorn's access
log the request's `client`, `method`, `path`, `http_version` and `status` as fields. Text
lines carry the trace ids at their end when there is a span.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from service.tracing import TraceFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line["trace_id"] = trace_id
            line["span_id"] = getattr(record, "span_id", "")
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            line.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exception"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, with ` trace_id=… span_id=…` appended inside a span."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            text = f"{text} trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        return text


def configure(fmt: str, level: int = logging.INFO) -> None:
    """The root logger writes to stderr in `fmt` ("text" or "json"), trace ids added."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(TEXT_FORMAT))
    handler.addFilter(TraceFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)


def uvicorn_log_config(fmt: str, level: str) -> dict[str, Any] | None:
    """uvicorn's `log_config`: None keeps its own (text); for JSON its error and access
    loggers write through the same JSON handler as everything else."""
    if fmt != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"trace": {"()": "service.tracing.TraceFilter"}},
        "formatters": {"json": {"()": "service.logs.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["trace"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
        "root": {"handlers": ["json"], "level": "INFO"},
    }
