"""`OpenAIProvider`: chat completions over the official `openai` SDK, for OpenAI itself and any
OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp, Azure); owns message conversion and error mapping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolUnionParam

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

PLACEHOLDER_API_KEY = "not-needed"
"""Sent when no key is configured: local OpenAI-compatible servers ignore it, the SDK insists on one."""


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def to_openai_messages(messages: tuple[Message, ...] | list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                item["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in m.tool_calls
                ]
            elif not m.content:
                # An assistant turn with neither text nor calls is rejected by some servers.
                item["content"] = ""
            out.append(item)
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def to_openai_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Accumulator:
    """Folds streamed chunks into one assistant message; tool-call pieces are keyed by their index."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, _PendingCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Take one chunk; return the text it adds."""
        if chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.usage = Usage(chunk.usage.prompt_tokens or 0, chunk.usage.completion_tokens or 0)
        text: list[str] = []
        for choice in chunk.choices or ():
            # n is always 1 here; a server that still sends other choices must not mix them in.
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    text.append(delta.content)
                for tc in delta.tool_calls or ():
                    pending = self.calls.setdefault(tc.index, _PendingCall())
                    if tc.id:
                        pending.id = tc.id
                    if tc.function is not None:
                        if tc.function.name:
                            pending.name += tc.function.name
                        if tc.function.arguments:
                            pending.arguments.append(tc.function.arguments)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        piece = "".join(text)
        self.text.append(piece)
        return piece

    def response(self, fallback_model: str) -> ModelResponse:
        calls = tuple(
            ToolCall(
                id=p.id or f"call_{uuid.uuid4().hex[:24]}",
                name=p.name,
                arguments="".join(p.arguments),
            )
            for _, p in sorted(self.calls.items())
        )
        message = Message(role="assistant", content="".join(self.text), tool_calls=calls)
        return ModelResponse(
            message=message,
            usage=self.usage or Usage(),
            model=self.model or fallback_model,
            finish_reason=self.finish_reason or ("tool_calls" if calls else "stop"),
        )


def map_openai_error(exc: BaseException, model: str) -> ModelError:
    """Translate what the SDK raises (after its own retries) into a `ModelError`."""
    where = f"openai model {model!r}"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        # The SDK puts the body's `error` object in `body`; its message beats "Error code: 429 - {...}".
        body = exc.body
        detail = body.get("message") if isinstance(body, dict) else None
        return ModelError(
            f"{where}: HTTP {status}: {detail or exc.message}",
            retryable=is_retryable_status(status),
            status=status,
        )
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return ModelError(f"{where}: request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return ModelError(f"{where}: connection failed: {exc}", retryable=True)
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors: the server sent garbage.
        return ModelError(f"{where}: malformed response: {exc}", retryable=False)
    if isinstance(exc, openai.APIError):
        # An error object inside an otherwise good stream: usually the server gave up mid-way.
        return ModelError(f"{where}: error in stream: {exc.message}", retryable=True)
    return ModelError(f"{where}: unexpected failure: {type(exc).__name__}: {exc}", retryable=False)


class OpenAIProvider:
    """A `ModelProvider` for the OpenAI chat-completions API."""

    def __init__(self, config: ModelConfig) -> None:
        self.name = config.model
        self._config = config
        # The official endpoint rejects `max_tokens` for reasoning models; many compatible servers
        # only know `max_tokens`.
        self._max_tokens_field = "max_completion_tokens" if config.base_url is None else "max_tokens"
        kwargs: dict[str, Any] = {}
        if config.base_url:
            kwargs["base_url"] = config.base_url
        if config.headers:
            kwargs["default_headers"] = dict(config.headers)
        self._client = openai.AsyncOpenAI(
            api_key=config.resolved_api_key() or PLACEHOLDER_API_KEY,
            timeout=openai.Timeout(config.timeout, connect=config.connect_timeout),
            max_retries=config.max_retries,
            **kwargs,
        )

    async def _open(self, request: ModelRequest) -> openai.AsyncStream[ChatCompletionChunk]:
        temperature = request.temperature if request.temperature is not None else self._config.temperature
        max_tokens: int | openai.Omit = openai.omit if request.max_tokens is None else request.max_tokens
        tools = to_openai_tools(request.tools)
        return await self._client.chat.completions.create(
            model=self._config.model,
            messages=cast("list[ChatCompletionMessageParam]", to_openai_messages(request.messages)),
            stream=True,
            stream_options={"include_usage": True},
            tools=cast("list[ChatCompletionToolUnionParam]", tools) if tools else openai.omit,
            temperature=openai.omit if temperature is None else temperature,
            max_tokens=max_tokens if self._max_tokens_field == "max_tokens" else openai.omit,
            max_completion_tokens=max_tokens if self._max_tokens_field != "max_tokens" else openai.omit,
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        loop = asyncio.get_running_loop()
        # `timeout` bounds each read; this deadline bounds the whole call, retries and streaming included.
        deadline = loop.time() + self._config.timeout
        try:
            async with asyncio.timeout_at(deadline):
                chunks = await self._open(request)
        except Exception as exc:
            raise map_openai_error(exc, self.name) from exc
        acc = _Accumulator()
        # `async with` closes the HTTP response on every exit, cancellation and generator close included.
        async with chunks:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise map_openai_error(exc, self.name) from exc
                try:
                    text = acc.add(chunk)
                except (AttributeError, TypeError, ValueError) as exc:
                    raise ModelError(
                        f"openai model {self.name!r}: malformed stream chunk: {exc}", retryable=False
                    ) from exc
                if text:
                    yield TextDelta(text)
        if acc.finish_reason is None:
            # A body that ends without a finish_reason was cut short, not finished.
            raise ModelError(f"openai model {self.name!r}: stream ended before the response finished")
        yield Completed(acc.response(self.name))

    async def aclose(self) -> None:
        await self._client.close()
