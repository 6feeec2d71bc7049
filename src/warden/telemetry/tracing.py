"""OpenTelemetry tracing: the tracer every Warden span comes from, its OTLP export, and W3C
trace context carried from the API through the queue to the worker. With no exporter
configured the tracer is OpenTelemetry's no-op one, so a span costs a function call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from warden import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from warden.telemetry.config import TelemetryConfig

log = logging.getLogger("warden.telemetry")

_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP = trace.NoOpTracer()


class _State:
    provider: TracerProvider | None = None
    tracer: Tracer = _NOOP
    capture_content = False
    configured_for: tuple[str, str] | None = None
    """(traces URL, service name) of the provider `configure_tracing` made, if it made one."""


def tracer() -> Tracer:
    return _State.tracer


def enabled() -> bool:
    return _State.provider is not None


def capture_content() -> bool:
    return _State.capture_content


def install_tracer_provider(provider: TracerProvider | None, *, capture: bool = False) -> None:
    """Use ``provider`` for Warden's spans (None: back to no-op). Warden never sets the global
    provider, so an embedding application's own tracing is left alone."""
    _State.provider = provider
    _State.tracer = provider.get_tracer("warden", __version__) if provider is not None else _NOOP
    _State.capture_content = capture
    _State.configured_for = None


def configure_tracing(config: TelemetryConfig) -> None:
    """Export spans over OTLP/HTTP when an endpoint is configured; otherwise leave tracing as it
    is (off, or a provider a test or an embedding application installed). Idempotent."""
    _State.capture_content = config.capture_content
    url = config.resolved_otlp_traces_url()
    if url is None:
        return
    key = (url, config.resolved_service_name())
    if _State.configured_for == key:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": key[1], "service.version": __version__})
    )
    # The batch processor exports from its own thread, so the event loop never waits on the collector.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=10)))
    previous = _State.provider if _State.configured_for is not None else None
    install_tracer_provider(provider, capture=config.capture_content)
    _State.configured_for = key
    log.info("tracing: exporting spans to %s as %s", url, key[1])
    if previous is not None:
        previous.shutdown()


async def flush(timeout: float = 5.0) -> None:
    """Export the spans still buffered (in a thread: the exporter blocks)."""
    provider = _State.provider
    if provider is not None:
        await asyncio.to_thread(provider.force_flush, int(timeout * 1000))


# -- trace context across the queue --------------------------------------------------------


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None when there is none (tracing off)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context a caller sent (``traceparent``/``tracestate``), or an empty one."""
    return _PROPAGATOR.extract(headers)


def context_from_traceparent(traceparent: str | None) -> otel_context.Context | None:
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else None


# -- spans -----------------------------------------------------------------------------------


def record_error(span: Span, exc: BaseException) -> None:
    span.set_attribute("error.type", type(exc).__qualname__)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))


@contextmanager
def invoke_agent_span(
    *,
    agent: str,
    version: str,
    task_id: str,
    attempt: int,
    model: str,
    provider: str,
    session_id: str | None,
    traceparent: str | None,
) -> Iterator[Span]:
    """The ``invoke_agent {agent}`` span of one attempt, a child of the span that submitted
    the task (its stored ``traceparent``) and the current span for the loop's chat and tool
    spans. Cancellation (cancel, shutdown, lost lease) ends it without marking an error."""
    if not enabled():
        yield NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent,
        "gen_ai.agent.version": version,
        "gen_ai.request.model": model,
        "gen_ai.provider.name": provider,
        "warden.task.id": task_id,
        "warden.task.attempt": attempt,
    }
    if session_id is not None:
        attributes["gen_ai.conversation.id"] = session_id
    span = _State.tracer.start_span(
        f"invoke_agent {agent}",
        context=context_from_traceparent(traceparent),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except asyncio.CancelledError:
        span.set_attribute("warden.task.interrupted", True)
        raise
    except BaseException as exc:
        record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()
