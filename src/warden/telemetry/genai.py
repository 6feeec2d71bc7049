"""GenAI spans and metrics around the two things an agent calls: ``chat {model}`` around a
model provider's stream (tokens counted by model) and ``execute_tool {tool}`` around a tool
call (latency by tool), plus policy decisions counted by verdict. Attribute names follow the
OpenTelemetry GenAI semantic conventions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from warden.models.base import Completed, ModelProvider, ModelRequest, StreamItem
from warden.telemetry import tracing
from warden.telemetry.metrics import MODEL_CALL_DURATION, MODEL_TOKENS, POLICY_DECISIONS, TOOL_CALL_DURATION
from warden.tools.base import Tool, ToolContext, ToolResult

if TYPE_CHECKING:
    from warden.governance.decision import Decision
    from warden.governance.gate import CallContext, ToolPolicy


class TracedProvider:
    """A model provider seen through telemetry: each ``stream`` is one ``chat`` span (a child
    of the current ``invoke_agent`` span) and adds its usage to ``warden_model_tokens_total``.
    It wraps the provider below the Gate, so captured content is what the model saw."""

    def __init__(self, inner: ModelProvider, *, provider: str, base_url: str | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.provider = provider
        self.server_address = urlsplit(base_url).hostname if base_url else None

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        return self._stream(request)

    async def _stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        started = time.monotonic()
        span = self._start_span(request) if tracing.enabled() else None
        outcome = "error"
        items = self.inner.stream(request)
        try:
            async for item in items:
                if isinstance(item, Completed):
                    outcome = "ok"
                    self._completed(item, span)
                yield item
        except BaseException as exc:
            if isinstance(exc, GeneratorExit | asyncio.CancelledError):
                outcome = "cancelled"
            elif span is not None:
                tracing.record_error(span, exc)
            raise
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()
            MODEL_CALL_DURATION.labels(self.name, outcome).observe(time.monotonic() - started)
            if span is not None:
                span.end()

    def _start_span(self, request: ModelRequest) -> Span:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.provider,
            "gen_ai.request.model": self.name,
        }
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if self.server_address:
            attributes["server.address"] = self.server_address
        if tracing.capture_content():
            attributes["gen_ai.input.messages"] = json.dumps(
                [m.to_dict() for m in request.messages], ensure_ascii=False
            )
        # Not made current: nothing below a model call makes spans, and a span attached inside
        # an async generator would be detached in whatever context closes the generator.
        return tracing.tracer().start_span(f"chat {self.name}", kind=SpanKind.CLIENT, attributes=attributes)

    def _completed(self, item: Completed, span: Span | None) -> None:
        response = item.response
        MODEL_TOKENS.labels(self.name, "input").inc(response.usage.input_tokens)
        MODEL_TOKENS.labels(self.name, "output").inc(response.usage.output_tokens)
        if span is None:
            return
        span.set_attribute("gen_ai.response.model", response.model or self.name)
        span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        span.set_attribute("gen_ai.usage.input_tokens", response.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", response.usage.output_tokens)
        if tracing.capture_content():
            span.set_attribute(
                "gen_ai.output.messages", json.dumps([response.message.to_dict()], ensure_ascii=False)
            )

    async def aclose(self) -> None:
        """Nothing: the runtime owns the provider underneath and closes it."""


class TracedTool:
    """A tool seen through telemetry: each call is one ``execute_tool`` span and one
    observation of ``warden_tool_call_duration_seconds``. Everything else (attributes,
    ``isinstance``) is the wrapped tool's, as with ``wrapt.ObjectProxy``, so the loop and the
    Gate treat it exactly like the tool itself. Arguments and results never go on spans:
    tools get real values, not PII placeholders."""

    __slots__ = ("__wrapped__",)

    def __init__(self, tool: Tool) -> None:
        object.__setattr__(self, "__wrapped__", tool)

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:
        return type(self.__wrapped__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __repr__(self) -> str:
        return f"TracedTool({self.__wrapped__!r})"

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        tool: Tool = self.__wrapped__
        started = time.monotonic()
        span = _tool_span(tool, ctx) if tracing.enabled() else None
        outcome = "error"
        try:
            result = await tool.call(arguments, ctx)
            outcome = "error" if result.is_error else "ok"
            if span is not None and result.is_error:
                span.set_attribute("error.type", "tool_error")
                span.set_status(Status(StatusCode.ERROR, "the tool reported an error"))
            return result
        except BaseException as exc:
            if span is not None:
                tracing.record_error(span, exc)
            if isinstance(exc, asyncio.CancelledError):
                outcome = "cancelled"
            raise
        finally:
            TOOL_CALL_DURATION.labels(tool.name, outcome).observe(time.monotonic() - started)
            if span is not None:
                span.end()


def _tool_span(tool: Tool, ctx: ToolContext) -> Span:
    return tracing.tracer().start_span(
        f"execute_tool {tool.name}",
        kind=SpanKind.INTERNAL,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.name,
            "gen_ai.tool.call.id": ctx.call_id,
            # MCP tools are named server.tool: they extend the agent from outside Warden.
            "gen_ai.tool.type": "extension" if "." in tool.name else "function",
            "warden.task.id": ctx.task_id,
        },
    )


def traced_tools(tools: dict[str, Tool]) -> dict[str, Tool]:
    return {name: TracedTool(tool) for name, tool in tools.items()}


def counted_policy(policy: ToolPolicy) -> ToolPolicy:
    """``policy``, counting each decision in ``warden_policy_decisions_total{verdict}``."""

    def decide(ctx: CallContext, tool: Tool, arguments: dict[str, Any]) -> Decision:
        try:
            decision = policy(ctx, tool, arguments)
        except Exception:
            POLICY_DECISIONS.labels("error").inc()
            raise
        POLICY_DECISIONS.labels(str(decision.verdict)).inc()
        return decision

    return decide
