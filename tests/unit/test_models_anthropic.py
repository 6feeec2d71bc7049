"""What only the Anthropic wire protocol shows: the request shape the SDK sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from warden.config import ModelConfig
from warden.models import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    Script,
    ScriptError,
    ScriptStep,
    ScriptToolCall,
    StreamItem,
    ToolCall,
    ToolSpec,
)
from warden.models.anthropic import AnthropicProvider
from warden.testing import FakeLLMServer

DEADLINE = 5.0
LONG_TEXT = "The quick brown fox jumps over the lazy dog. " * 20

SCRIPTS = [
    Script(
        name="text",
        steps=(
            ScriptStep(text="Hello from the fake server!", usage={"input_tokens": 11, "output_tokens": 7}),
        ),
    ),
    Script(
        name="parallel",
        steps=(
            ScriptStep(
                text="Let me check.",
                tool_calls=(
                    ScriptToolCall(name="current_time", arguments={"timezone": "UTC"}),
                    ScriptToolCall(name="calculator", arguments={"expression": "1234 * 5678"}),
                ),
            ),
        ),
    ),
    Script(
        name="bad-args",
        steps=(ScriptStep(tool_calls=(ScriptToolCall(name="calculator", arguments='{"expression": "1+'),)),),
    ),
    Script(name="rate-limited", steps=(ScriptStep(text="finally", error=ScriptError(status=429, times=2)),)),
    Script(name="server-error", steps=(ScriptStep(text="never", error=ScriptError(status=500, times=99)),)),
    Script(name="bad-request", steps=(ScriptStep(text="never", error=ScriptError(status=400, times=99)),)),
    Script(name="malformed", steps=(ScriptStep(text="broken", malformed=True),)),
    Script(name="slow", steps=(ScriptStep(text=LONG_TEXT, chunk_size=4, chunk_delay=0.05),)),
    Script(name="stalled", steps=(ScriptStep(text="too late", delay=30.0),)),
    Script(
        name="two-turns",
        steps=(ScriptStep(text="first"), ScriptStep(text="The tool said: {{last_tool_result}}")),
    ),
    Script(name="echo", steps=(ScriptStep(text="ok"),)),
]

USER_ONLY = ModelRequest(messages=(Message(role="user", content="hi"),))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(SCRIPTS) as srv:
        yield srv


@pytest.fixture
async def make(server: FakeLLMServer) -> AsyncIterator[Callable[..., AnthropicProvider]]:
    made: list[AnthropicProvider] = []

    def build(model: str, **overrides: Any) -> AnthropicProvider:
        settings: dict[str, Any] = {
            "provider": "anthropic",
            "model": model,
            "base_url": server.anthropic_url,
            "timeout": 5.0,
        }
        provider = AnthropicProvider(ModelConfig(**(settings | overrides)))
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


async def collect(provider: AnthropicProvider, request: ModelRequest = USER_ONLY) -> list[StreamItem]:
    async with asyncio.timeout(DEADLINE):
        return [item async for item in provider.stream(request)]


def completed(items: list[StreamItem]) -> Completed:
    last = items[-1]
    assert isinstance(last, Completed)
    return last


async def test_messages_and_tools_are_sent_in_anthropic_shape(
    server: FakeLLMServer, make: Callable[..., AnthropicProvider]
) -> None:
    request = ModelRequest(
        messages=(
            Message(role="system", content="be brief"),
            Message(role="user", content="time and sum?"),
            Message(
                role="assistant",
                content="Checking.",
                tool_calls=(
                    ToolCall("toolu_a", "current_time", "{}"),
                    ToolCall("toolu_b", "calculator", '{"expression": "1+'),
                ),
            ),
            Message(role="tool", content="12:00", tool_call_id="toolu_a", name="current_time"),
            Message(
                role="tool", content="bad arguments", tool_call_id="toolu_b", name="calculator", is_error=True
            ),
        ),
        tools=(ToolSpec("calculator", "Evaluates arithmetic.", {"type": "object", "properties": {}}),),
    )

    await collect(make("echo"), request)

    body = server.requests_for("echo")[-1]
    assert body["system"] == "be brief"
    assert body["max_tokens"] == 4096
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "time and sum?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_a", "name": "current_time", "input": {}},
                {"type": "tool_use", "id": "toolu_b", "name": "calculator", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_a", "content": "12:00"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_b",
                    "content": "bad arguments",
                    "is_error": True,
                },
            ],
        },
    ]
    assert body["tools"] == [
        {
            "name": "calculator",
            "description": "Evaluates arithmetic.",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]
    assert body["stream"] is True


async def test_request_max_tokens_is_sent(
    server: FakeLLMServer, make: Callable[..., AnthropicProvider]
) -> None:
    await collect(make("echo"), ModelRequest(messages=USER_ONLY.messages, max_tokens=123))

    assert server.requests_for("echo")[-1]["max_tokens"] == 123


async def test_provider_is_named_after_the_model_and_satisfies_the_protocol(
    make: Callable[..., AnthropicProvider],
) -> None:
    provider = make("claude-test")

    assert provider.name == "claude-test"
    assert isinstance(provider, ModelProvider)
