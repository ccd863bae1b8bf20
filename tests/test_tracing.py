"""Traces (service/tracing.py) recorded by the SDK's in-memory exporter: the span tree of
a real stream (request, resolve, listing, cache lookup, stream, one fetch per object,
tee commit) and of a job (job, queued, build, stream, fetches, commit); trace ids in the
logs; nothing at all while tracing is off."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service import tracing
from service.app import create_app
from service.logs import JsonFormatter, TextFormatter
from service.settings import Settings
from tests.servers import serve
from tests.web.test_api import write_files


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    with tracing.installed(exporter):
        yield exporter


def settings_for(tmp_path: Path, **env: str) -> Settings:
    root = tmp_path / "photos"
    if not root.exists():
        write_files(root)
    return Settings.from_env(
        {
            "ZIPEDGE_SOURCE": f"file://{root}",
            "ZIPEDGE_CACHE": f"file://{tmp_path / 'cache'}",
            "ZIPEDGE_DATA_DIR": str(tmp_path / "var"),
            **env,
        }
    )


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def wait_for(exporter: InMemorySpanExporter, name: str, timeout_s: float = 20) -> list[ReadableSpan]:
    """The finished spans, once one named `name` is among them (the tee commit and a job
    end after the response)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finished = list(exporter.get_finished_spans())
        if any(s.name == name for s in finished):
            return finished
        time.sleep(0.05)
    raise AssertionError(f"no {name!r} span in {[s.name for s in exporter.get_finished_spans()]}")


def test_a_stream_is_one_trace_with_a_fetch_per_object(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    with serve(create_app(settings_for(tmp_path))) as url:
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        response = httpx.get(
            f"{url}/v1/zip",
            params={"from": "2025-01-01", "to": "2025-01-02"},
            headers={"traceparent": traceparent},
        )
        assert response.status_code == 200
        finished = wait_for(spans, "tee commit")

    request = one(finished, "GET /v1/zip")
    assert request.context is not None
    assert format(request.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # continued
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200
    assert {s.context.trace_id for s in finished if s.context} == {request.context.trace_id}
    under_request = sorted(s.name for s in children(finished, request))
    assert under_request == ["cache lookup", "resolve", "stream", "tee commit"]

    resolve = one(finished, "resolve")
    assert [s.name for s in children(finished, resolve)] == ["listing"]
    lookup = one(finished, "cache lookup")
    assert lookup.attributes is not None and lookup.attributes["zipedge.cache.hit"] is False

    stream = one(finished, "stream")
    assert stream.attributes is not None
    entries = stream.attributes["zipedge.entries"]
    assert stream.attributes["zipedge.outcome"] == "complete"
    assert stream.attributes["zipedge.bytes"] == int(response.headers["content-length"])
    fetches = children(finished, stream)
    assert len(fetches) == entries == 9 and {s.name for s in fetches} == {"fetch"}
    by_key = {s.attributes["zipedge.key"]: s.attributes for s in fetches if s.attributes}
    night = by_key["2025/01/02/night/KA01Z9999-235959.jpg"]
    assert (night["zipedge.bytes"], night["zipedge.retries"]) == (70_000, 0)

    # The archive is cached now (a folder cache: served from its file): the lookup hits
    # and nothing streams.
    spans.clear()
    with serve(create_app(settings_for(tmp_path))) as url:
        assert (
            httpx.head(f"{url}/v1/zip", params={"from": "2025-01-01", "to": "2025-01-02"}).status_code == 200
        )
    finished = list(spans.get_finished_spans())
    lookup = one(finished, "cache lookup")
    assert lookup.attributes is not None and lookup.attributes["zipedge.cache.hit"] is True
    assert not [s for s in finished if s.name in ("stream", "fetch")]


def test_a_job_has_its_phases(spans: InMemorySpanExporter, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ZIPEDGE_STREAM_MAX_ENTRIES="2")
    with serve(create_app(settings)) as url:
        answer = httpx.post(f"{url}/v1/jobs", json={"from": "2025-01-01", "to": "2025-01-03"})
        assert answer.status_code == 202, answer.text
        status_url = answer.json()["status_url"]
        deadline = time.monotonic() + 30
        while httpx.get(status_url).json()["status"] != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        finished = wait_for(spans, "job")

    job = one(finished, "job")
    assert job.attributes is not None and job.attributes["zipedge.entries"] == 14
    post = one(finished, "POST /v1/jobs")
    assert job.parent is not None and post.context is not None
    assert job.parent.span_id == post.context.span_id  # the job is part of the request's trace
    assert sorted(s.name for s in children(finished, job)) == ["build", "commit", "queued"]
    queued, build = one(finished, "queued"), one(finished, "build")
    assert queued.start_time is not None and queued.end_time is not None and build.start_time is not None
    assert queued.start_time <= queued.end_time <= build.start_time
    stream = one(finished, "stream")
    assert stream.parent is not None and build.context is not None
    assert stream.parent.span_id == build.context.span_id
    assert len(children(finished, stream)) == 14


def test_off_records_nothing_and_makes_no_fetch_spans(tmp_path: Path) -> None:
    assert not tracing.enabled
    assert tracing.start("x") is None
    assert tracing.child_context(None) is None
    with tracing.span("nothing") as nothing:
        assert nothing is None
    with serve(create_app(settings_for(tmp_path))) as url:
        assert (
            httpx.get(f"{url}/v1/zip", params={"from": "2025-01-01", "to": "2025-01-01"}).status_code == 200
        )


def test_log_lines_inside_a_span_carry_its_ids(spans: InMemorySpanExporter) -> None:
    text, lines = io.StringIO(), io.StringIO()
    logger = logging.getLogger("tests.tracing")
    handlers = [logging.StreamHandler(text), logging.StreamHandler(lines)]
    handlers[0].setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    handlers[1].setFormatter(JsonFormatter())
    for handler in handlers:
        handler.addFilter(tracing.TraceFilter())
        logger.addHandler(handler)
    try:
        logger.warning("outside")
        with tracing.span("work"):
            logger.warning("inside %s", "a span")
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    work = one(list(spans.get_finished_spans()), "work")
    assert work.context is not None
    trace_id, span_id = format(work.context.trace_id, "032x"), format(work.context.span_id, "016x")
    outside, inside = text.getvalue().splitlines()
    assert outside == "WARNING tests.tracing: outside"
    assert inside == f"WARNING tests.tracing: inside a span trace_id={trace_id} span_id={span_id}"
    first, second = (json.loads(line) for line in lines.getvalue().splitlines())
    assert "trace_id" not in first and first["message"] == "outside"
    assert (second["message"], second["trace_id"], second["span_id"]) == ("inside a span", trace_id, span_id)


def test_a_job_in_another_process_continues_the_submitting_trace(spans: InMemorySpanExporter) -> None:
    """What the saq queue stores in the job's meta and the worker reads back."""
    assert tracing.inject() == {}  # no span: nothing to continue
    with tracing.span("POST /v1/jobs"):
        carrier = tracing.inject()
    assert set(carrier) == {"traceparent"}
    with tracing.span("job", parent=tracing.extract(carrier)):
        pass
    post, job = (
        one(list(spans.get_finished_spans()), "POST /v1/jobs"),
        one(list(spans.get_finished_spans()), "job"),
    )
    assert post.context is not None and job.parent is not None
    assert (job.parent.trace_id, job.parent.span_id) == (post.context.trace_id, post.context.span_id)


def test_a_trace_the_sampler_leaves_out_gets_no_fetch_spans(spans: InMemorySpanExporter) -> None:
    from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan

    assert tracing.child_context(NonRecordingSpan(INVALID_SPAN.get_span_context())) is None
    recorded = tracing.start("stream")
    assert tracing.child_context(recorded) is not None
    tracing.end(recorded)
