"""OpenTelemetry traces: off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

When on (`setup`, called by `zipedge serve` and `zipedge worker`), spans go to that
endpoint over OTLP/HTTP (`/v1/traces` under it, as the variable's specification says),
in batches, named by `OTEL_SERVICE_NAME` (default `zipedge`). The tree:

    GET /v1/zip                    the request (TracingMiddleware; a W3C traceparent continues)
      resolve                      the selection becomes a manifest
        listing                    the day prefixes (or the posted keys' days), cache or source
      cache lookup                 is the archive built already (zipedge.cache.hit)
      stream                       the archive's bytes (zipedge.bytes, entries, outcome)
        fetch                      one object read (zipedge.key, bytes, retries), per entry
      tee commit                   the teed copy committed to the cache
    job                            a job attempt (worker or in-process runner)
      queued                       from the submission to this attempt's start
      build                        the archive written into the cache writer
        stream
          fetch ...
      commit                       the cache object committed

When off, nothing is recorded and the hot path pays nothing: the request middleware
passes straight through, `span` is a shared no-op context manager, and the prefetcher
creates no fetch span at all (`enabled` is checked once per stream). The exporter is
only imported when an endpoint is set.

When on, a span costs the SDK ~40 us of CPU to record and as much again to encode and
export, so the fetch spans of a 1,000-photo stream add ~0.1 ms per photo
(docs/operations.md, "Tracing"). The SDK's standard sampler variables apply
(`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.05`): a
stream the sampler leaves out makes no fetch spans at all.

`TraceFilter` adds `trace_id` and `span_id` (hex, "" without a span) to every log record,
so a log line can be found from its trace and the other way round.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "TraceFilter",
    "TracingMiddleware",
    "child_context",
    "end",
    "install",
    "setup",
    "shutdown",
    "span",
    "start",
]

#: True once a tracer provider is installed; every instrumentation point checks it first.
enabled = False
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None

Attributes = Mapping[str, str | int | float | bool]


def install(exporter: SpanExporter, *, service_name: str = "zipedge", batch: bool = True) -> TracerProvider:
    """Record spans into `exporter` from now on (tests pass an in-memory one, `batch=False`).
    The global provider is left alone: several installs in one process (tests) are fine."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    global enabled, _tracer, _provider
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    _provider, _tracer, enabled = provider, provider.get_tracer("zipedge"), True
    return provider


def setup(endpoint: str, service_name: str) -> bool:
    """Export spans to the OTLP/HTTP collector at `endpoint` (the base URL, as in
    OTEL_EXPORTER_OTLP_ENDPOINT); nothing when it is empty. Whether tracing is on."""
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = install(
        OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"), service_name=service_name
    )
    trace.set_tracer_provider(provider)
    logging.getLogger(__name__).info("tracing: spans go to %s as %s", endpoint, service_name)
    return True


def shutdown() -> None:
    """Flush what is batched and stop recording (process exit; tests)."""
    global enabled, _tracer, _provider
    provider, _provider = _provider, None
    enabled, _tracer = False, trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


# --- spans -----------------------------------------------------------------------------

_NOTHING = contextlib.nullcontext()


def span(
    name: str,
    attributes: Attributes | None = None,
    *,
    parent: otel_context.Context | None = None,
    start_time_s: float | None = None,
) -> contextlib.AbstractContextManager[Any]:
    """A span current for the `with` block (coroutines only: an async generator would
    leave it current in its caller between yields); an exception ends it as an error.
    Its parent is `parent`, else the current span. When tracing is off, a shared no-op."""
    if not enabled:
        return _NOTHING
    start_ns = None if start_time_s is None else int(start_time_s * 1e9)
    return _tracer.start_as_current_span(name, context=parent, attributes=attributes, start_time=start_ns)


def start(
    name: str,
    attributes: Attributes | None = None,
    *,
    parent: otel_context.Context | None = None,
    start_time_s: float | None = None,
) -> Span | None:
    """A span that is not made current (for async generators and tasks): its parent is
    `parent`, else the current span. None when tracing is off; `end` it."""
    if not enabled:
        return None
    start_ns = None if start_time_s is None else int(start_time_s * 1e9)
    return _tracer.start_span(name, context=parent, attributes=attributes, start_time=start_ns)


def end(
    span_: Span | None,
    attributes: Attributes | None = None,
    *,
    error: BaseException | None = None,
    end_time_s: float | None = None,
) -> None:
    """End a span of `start` with its closing attributes; `error` marks it failed."""
    if span_ is None:
        return
    if attributes:
        span_.set_attributes(attributes)
    if error is not None:
        span_.record_exception(error)
        span_.set_status(Status(StatusCode.ERROR, getattr(error, "message", None) or type(error).__name__))
    span_.end(end_time=None if end_time_s is None else int(end_time_s * 1e9))


def child_context(span_: Span | None) -> otel_context.Context | None:
    """The context whose current span is `span_` (the parent to give its children); None
    when there is none or it is not recorded (a trace the sampler left out: its children
    would not be either, so the prefetcher makes none)."""
    if span_ is None or not span_.is_recording():
        return None
    return trace.set_span_in_context(span_)


def inject() -> dict[str, str]:
    """The current trace as W3C headers (`traceparent`), to continue it elsewhere (a job
    in a worker); {} when tracing is off or there is no span."""
    carrier: dict[str, str] = {}
    if enabled:
        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context `inject` wrote (None when tracing is off or there is nothing)."""
    if not enabled or not carrier:
        return None
    return propagate.extract(dict(carrier))


def set_attributes(attributes: Attributes) -> None:
    """On the current span, if tracing is on."""
    if enabled:
        trace.get_current_span().set_attributes(attributes)


# --- the request span --------------------------------------------------------------------


class TracingMiddleware:
    """One server span per HTTP request, named `METHOD route` once routing has run; an
    incoming W3C `traceparent` makes it part of the caller's trace. Pure ASGI (streaming
    bodies pass through, and the span lasts until the last byte is sent)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())}
        parent = propagate.extract(carrier)
        method = scope["method"]
        status = 500
        with _tracer.start_as_current_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")},
        ) as current:

            async def observe(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, observe)
            finally:
                route = scope.get("route")
                path = getattr(route, "path", None)
                if path:
                    current.update_name(f"{method} {path}")
                    current.set_attribute("http.route", path)
                current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    current.set_status(Status(StatusCode.ERROR))


# --- logs ------------------------------------------------------------------------------


class TraceFilter(logging.Filter):
    """Adds `trace_id` and `span_id` of the current span to each record ("" when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


@contextlib.contextmanager
def installed(exporter: SpanExporter) -> Iterator[TracerProvider]:
    """`install` for the block, then `shutdown` (tests)."""
    provider = install(exporter, batch=False)
    try:
        yield provider
    finally:
        shutdown()
