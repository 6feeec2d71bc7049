"""`AnthropicProvider`: the Messages API over the official `anthropic` SDK; owns the conversion of
provider-neutral messages to Anthropic content blocks and the mapping of SDK failures to `ModelError`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2
from anthropic.types import MessageParam, RawMessageStreamEvent, ToolUnionParam

from warden.config import ModelConfig
from warden.errors import ModelError
from warden.models.base import (
    Completed,
    Message,
    ModelRequest,
    ModelResponse,
    StreamItem,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires `max_tokens` on every call; used when the request sets none."""
PLACEHOLDER_API_KEY = "not-needed"

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "refusal": "content_filter",
}
"""Anthropic stop reasons in the OpenAI-style vocabulary `ModelResponse.finish_reason` uses."""

_RETRYABLE_ERROR_TYPES = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def parse_arguments(arguments: str) -> dict[str, Any]:
    """Stored arguments as the JSON object Anthropic wants; `{}` when the model had produced garbage,
    so the conversation (whose tool result already reports the bad arguments) can go on."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Split out the system prompt and build alternating user/assistant turns."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        # Consecutive same-role turns are merged: tool results of one assistant turn must arrive in
        # one user message, and the API wants roles to alternate.
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        if m.role == "system":
            if m.content:
                system.append(m.content)
        elif m.role == "user":
            if m.content:
                append("user", [{"type": "text", "text": m.content}])
        elif m.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.content,
            }
            if m.is_error:
                block["is_error"] = True
            append("user", [block])
        else:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": parse_arguments(c.arguments)}
                for c in m.tool_calls
            )
            if blocks:
                append("assistant", blocks)
    for turn in out:
        # Tool results must lead their user message; text typed after them goes last.
        turn["content"].sort(key=lambda b: 0 if b["type"] == "tool_result" else 1)
    return "\n\n".join(system), out


def to_anthropic_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "description": t.description,
            "input_schema": t.parameters or {"type": "object", "properties": {}},
        }
        for t in tools
    ]


@dataclass
class _Block:
    kind: str
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    initial_input: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Accumulator:
    blocks: dict[int, _Block] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    stopped: bool = False
    model: str = ""

    def add(self, event: RawMessageStreamEvent) -> str:
        """Take one event; return the text it adds."""
        if event.type == "message_start":
            self.model = event.message.model or ""
            usage = event.message.usage
            if usage is not None:
                self.input_tokens = _input_tokens(
                    usage.input_tokens, usage.cache_creation_input_tokens, usage.cache_read_input_tokens
                )
                self.output_tokens = usage.output_tokens or 0
        elif event.type == "content_block_start":
            cb = event.content_block
            if cb.type == "tool_use":
                self.blocks[event.index] = _Block(
                    "tool_use", id=cb.id, name=cb.name, initial_input=dict(cb.input)
                )
            elif cb.type == "text":
                self.blocks[event.index] = _Block("text", parts=[cb.text] if cb.text else [])
                return cb.text or ""
        elif event.type == "content_block_delta":
            delta = event.delta
            block = self.blocks.get(event.index)
            if delta.type == "text_delta":
                if block is None:
                    block = self.blocks[event.index] = _Block("text")
                block.parts.append(delta.text)
                return delta.text
            if delta.type == "input_json_delta" and block is not None:
                block.parts.append(delta.partial_json)
        elif event.type == "message_delta":
            if event.delta.stop_reason:
                self.stop_reason = event.delta.stop_reason
            # message_delta usage is cumulative; input counts appear here only on newer API versions.
            totals = event.usage
            if totals.output_tokens is not None:
                self.output_tokens = totals.output_tokens
            if totals.input_tokens is not None:
                self.input_tokens = _input_tokens(
                    totals.input_tokens, totals.cache_creation_input_tokens, totals.cache_read_input_tokens
                )
        elif event.type == "message_stop":
            self.stopped = True
        return ""

    def response(self, fallback_model: str) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        for _, block in sorted(self.blocks.items()):
            if block.kind == "text":
                text.extend(block.parts)
            else:
                raw = "".join(block.parts)
                if not raw:
                    # No input_json_delta at all: the start event carried the whole input.
                    raw = json.dumps(block.initial_input)
                calls.append(ToolCall(id=block.id, name=block.name, arguments=raw))
        reason = self.stop_reason or ("tool_use" if calls else "end_turn")
        return ModelResponse(
            message=Message(role="assistant", content="".join(text), tool_calls=tuple(calls)),
            usage=Usage(self.input_tokens, self.output_tokens),
            model=self.model or fallback_model,
            finish_reason=STOP_REASONS.get(reason, reason),
        )


def _input_tokens(base: int | None, cache_creation: int | None, cache_read: int | None) -> int:
    # Cached prompt tokens are still input the call consumed; budgets count them.
    return (base or 0) + (cache_creation or 0) + (cache_read or 0)


def map_anthropic_error(exc: BaseException, model: str) -> ModelError:
    """Translate what the SDK raises (after its own retries) into a `ModelError`."""
    where = f"anthropic model {model!r}"
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = exc.api_message or exc.message
        if status < 400:
            # An `error` event inside a 200 stream: its type says whether trying again can help.
            kind = exc.type or "error"
            return ModelError(
                f"{where}: {kind} in stream: {detail}", retryable=kind in _RETRYABLE_ERROR_TYPES
            )
        return ModelError(
            f"{where}: HTTP {status}: {detail}", retryable=is_retryable_status(status), status=status
        )
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return ModelError(f"{where}: request timed out", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ModelError(f"{where}: connection failed: {exc}", retryable=True)
    if isinstance(exc, anthropic.APIResponseValidationError | ValueError):
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors: the server sent garbage.
        return ModelError(f"{where}: malformed response: {exc}", retryable=False)
    if isinstance(exc, anthropic.APIError):
        return ModelError(f"{where}: {exc.message}", retryable=True)
    return ModelError(f"{where}: unexpected failure: {type(exc).__name__}: {exc}", retryable=False)


class AnthropicProvider:
    """A `ModelProvider` for the Anthropic Messages API."""

    def __init__(self, config: ModelConfig) -> None:
        self.name = config.model
        self._config = config
        kwargs: dict[str, Any] = {}
        if config.base_url:
            kwargs["base_url"] = config.base_url
        if config.headers:
            kwargs["default_headers"] = dict(config.headers)
        # An explicit api_key also stops the SDK from looking for profile or workload credentials.
        self._client = anthropic.AsyncAnthropic(
            api_key=config.resolved_api_key() or PLACEHOLDER_API_KEY,
            timeout=anthropic.Timeout(config.timeout, connect=config.connect_timeout),
            max_retries=config.max_retries,
            **kwargs,
        )

    async def _open(self, request: ModelRequest) -> anthropic.AsyncStream[RawMessageStreamEvent]:
        system, messages = to_anthropic_messages(request.messages)
        tools = to_anthropic_tools(request.tools)
        temperature = request.temperature if request.temperature is not None else self._config.temperature
        extra_body: dict[str, Any] = {}
        if temperature is not None:
            # This SDK no longer declares `temperature`; Anthropic accepts 0-1, the config allows up to 2.
            extra_body["temperature"] = min(temperature, 1.0)
        return await self._client.messages.create(
            model=self._config.model,
            max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
            messages=cast("list[MessageParam]", messages),
            system=system or anthropic.omit,
            tools=cast("list[ToolUnionParam]", tools) if tools else anthropic.omit,
            stream=True,
            extra_body=extra_body or None,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        loop = asyncio.get_running_loop()
        # `timeout` bounds each read; this deadline bounds the whole call, retries and streaming included.
        deadline = loop.time() + self._config.timeout
        try:
            async with asyncio.timeout_at(deadline):
                events = await self._open(request)
        except Exception as exc:
            raise map_anthropic_error(exc, self.name) from exc
        acc = _Accumulator()
        # `async with` closes the HTTP response on every exit, cancellation and generator close included.
        async with events:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await events.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise map_anthropic_error(exc, self.name) from exc
                try:
                    text = acc.add(event)
                except (AttributeError, TypeError, ValueError) as exc:
                    raise ModelError(
                        f"anthropic model {self.name!r}: malformed stream event: {exc}", retryable=False
                    ) from exc
                if text:
                    yield TextDelta(text)
        if not acc.stopped:
            # A body that ends without message_stop was cut short, not finished.
            raise ModelError(f"anthropic model {self.name!r}: stream ended before the response finished")
        yield Completed(acc.response(self.name))

    async def aclose(self) -> None:
        await self._client.close()
