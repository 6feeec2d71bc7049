"""What only the Anthropic wire protocol shows: the request shape the SDK sends."""

from __future__ import annotations

from collections.abc import Callable

from tests.unit._models import USER_ONLY, collect
from warden.models import Message, ModelProvider, ModelRequest, ToolCall, ToolSpec
from warden.testing import FakeLLMServer

WIRE = "anthropic"
"""The protocol these tests speak (tests/unit/conftest.py reads it)."""


async def test_messages_and_tools_are_sent_in_anthropic_shape(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
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


async def test_request_max_tokens_is_sent(server: FakeLLMServer, make: Callable[..., ModelProvider]) -> None:
    await collect(make("echo"), ModelRequest(messages=USER_ONLY.messages, max_tokens=123))

    assert server.requests_for("echo")[-1]["max_tokens"] == 123


async def test_provider_is_named_after_the_model_and_satisfies_the_protocol(
    make: Callable[..., ModelProvider],
) -> None:
    provider = make("claude-test")

    assert provider.name == "claude-test"
    assert isinstance(provider, ModelProvider)
