"""In-process providers for demos and tests: `ScriptedProvider` replays a `Script`, `FunctionProvider`
asks a Python function for each turn; both stream like a real model, without any network."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from warden.errors import ModelError
from warden.models.base import (
    Completed,
    Message,
    ModelRequest,
    ModelResponse,
    StreamItem,
    TextDelta,
    ToolCall,
    Usage,
)
from warden.models.script import Script, ScriptStep, chunks, estimate_tokens, render_step

StepFunction = Callable[[ModelRequest], ScriptStep | Awaitable[ScriptStep]]
"""What `FunctionProvider` calls for every turn."""


def is_retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def messages_digest(messages: Sequence[Message]) -> str:
    """Identifies a conversation, so scripted errors are counted per identical request."""
    raw = json.dumps([m.to_dict() for m in messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def estimate_usage(
    step: ScriptStep, messages: Sequence[Message], text: str, arguments: Sequence[str]
) -> Usage:
    if step.usage is not None:
        return Usage(
            int(step.usage.get("input_tokens", step.usage.get("prompt_tokens", 0))),
            int(step.usage.get("output_tokens", step.usage.get("completion_tokens", 0))),
        )
    prompt = "".join(m.content + "".join(c.arguments for c in m.tool_calls) for m in messages)
    return Usage(estimate_tokens(prompt), estimate_tokens(text + "".join(arguments)))


class _StepPlayer:
    """Streams one step; shared by both providers so they fail and stream the same way."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._failures: dict[str, int] = {}

    async def play(self, step: ScriptStep, request: ModelRequest) -> AsyncIterator[StreamItem]:
        messages = request.messages
        # Sleeping (not busy-waiting) keeps every pause cancellable, like a real slow server.
        if step.delay:
            await asyncio.sleep(step.delay)
        if step.error is not None:
            key = messages_digest(messages)
            seen = self._failures.get(key, 0)
            if seen < step.error.times:
                self._failures[key] = seen + 1
                status = step.error.status
                raise ModelError(
                    f"{self.name}: HTTP {status}: {step.error.message}",
                    retryable=is_retryable_status(status),
                    status=status,
                )
        if step.malformed:
            raise ModelError(f"{self.name}: malformed response", retryable=False)
        rendered = render_step(step, messages)
        for i, piece in enumerate(chunks(rendered.text, step.chunk_size)):
            if i and step.chunk_delay:
                await asyncio.sleep(step.chunk_delay)
            yield TextDelta(piece)
        calls = tuple(ToolCall(id=cid, name=name, arguments=args) for cid, name, args in rendered.tool_calls)
        usage = estimate_usage(step, messages, rendered.text, [c.arguments for c in calls])
        yield Completed(
            ModelResponse(
                message=Message(role="assistant", content=rendered.text, tool_calls=calls),
                usage=usage,
                model=self.name,
                finish_reason="tool_calls" if calls else "stop",
            )
        )


class ScriptedProvider:
    """Replays a `Script`: the step is chosen by how many assistant turns the request holds."""

    def __init__(self, script: Script, name: str = "scripted") -> None:
        self.name = name
        self.script = script
        self._player = _StepPlayer(name)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        async for item in self._player.play(self.script.step_for(request.messages), request):
            yield item

    async def aclose(self) -> None:
        return None


class FunctionProvider:
    """Calls ``fn(request)`` for every turn and streams the `ScriptStep` it returns (sync or async)."""

    def __init__(self, fn: StepFunction, name: str = "function") -> None:
        self.name = name
        self._fn = fn
        self._player = _StepPlayer(name)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamItem]:
        result = self._fn(request)
        step = await result if inspect.isawaitable(result) else result
        async for item in self._player.play(step, request):
            yield item

    async def aclose(self) -> None:
        return None
