"""What only the OpenAI wire protocol shows: the request shape the SDK sends."""

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
from warden.models.openai import OpenAIProvider
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
async def make(server: FakeLLMServer) -> AsyncIterator[Callable[..., OpenAIProvider]]:
    made: list[OpenAIProvider] = []

    def build(model: str, **overrides: Any) -> OpenAIProvider:
        settings: dict[str, Any] = {
            "provider": "openai",
            "model": model,
            "base_url": server.url,
            "timeout": 5.0,
        }
        provider = OpenAIProvider(ModelConfig(**(settings | overrides)))
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


async def collect(provider: OpenAIProvider, request: ModelRequest = USER_ONLY) -> list[StreamItem]:
    async with asyncio.timeout(DEADLINE):
        return [item async for item in provider.stream(request)]


def completed(items: list[StreamItem]) -> Completed:
    last = items[-1]
    assert isinstance(last, Completed)
    return last


async def test_messages_and_tools_are_sent_in_openai_shape(
    server: FakeLLMServer, make: Callable[..., OpenAIProvider]
) -> None:
    request = ModelRequest(
        messages=(
            Message(role="system", content="be brief"),
            Message(role="user", content="add 1 and 2"),
            Message(
                role="assistant", tool_calls=(ToolCall("call_9", "calculator", '{"expression": "1+2"}'),)
            ),
            Message(role="tool", content="3", tool_call_id="call_9", name="calculator"),
        ),
        tools=(ToolSpec("calculator", "Evaluates arithmetic.", {"type": "object", "properties": {}}),),
        max_tokens=50,
    )

    await collect(make("echo", base_url=server.url), request)

    body = server.requests_for("echo")[-1]
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "add 1 and 2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "1+2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "3"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": "Evaluates arithmetic.",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 50
    assert "parallel_tool_calls" not in body


async def test_provider_is_named_after_the_model_and_satisfies_the_protocol(
    make: Callable[..., OpenAIProvider],
) -> None:
    provider = make("gpt-test")

    assert provider.name == "gpt-test"
    assert isinstance(provider, ModelProvider)
