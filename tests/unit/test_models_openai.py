"""What only the OpenAI wire protocol shows: the request shape the SDK sends."""

from __future__ import annotations

from collections.abc import Callable

from tests.unit._models import collect
from warden.models import Message, ModelProvider, ModelRequest, ToolCall, ToolSpec
from warden.testing import FakeLLMServer

WIRE = "openai"
"""The protocol these tests speak (tests/unit/conftest.py reads it)."""


async def test_messages_and_tools_are_sent_in_openai_shape(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
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
    make: Callable[..., ModelProvider],
) -> None:
    provider = make("gpt-test")

    assert provider.name == "gpt-test"
    assert isinstance(provider, ModelProvider)
