"""ASGI middleware: counts and times every HTTP request by route template (never the raw
path, so ids do not explode the series) and, when tracing is on, opens the server span that a
caller's ``traceparent`` continues and that a submitted task's trace hangs from."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warden.telemetry import tracing
from warden.telemetry.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "<unmatched>"


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else UNMATCHED


class HttpTelemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        started = time.perf_counter()
        status = 500
        span: Any = None
        token: object | None = None
        if tracing.enabled():
            carrier = {
                key.decode("latin-1"): value.decode("latin-1")
                for key, value in scope.get("headers", ())
                if key in (b"traceparent", b"tracestate")
            }
            span = tracing.tracer().start_span(
                method,
                context=tracing.context_from_headers(carrier),
                kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
            )
            token = otel_context.attach(trace.set_span_in_context(span))

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = route_of(scope)
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
