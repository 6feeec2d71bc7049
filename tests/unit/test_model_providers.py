"""Every model provider through its real SDK against a FakeLLMServer on loopback: one test per
behaviour, run for each wire protocol (OpenAI chat completions, Anthropic messages)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.unit._models import DEADLINE, USER_ONLY, collect, completed, providers
from warden.errors import ModelError
from warden.models import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    Script,
    ScriptError,
    ScriptStep,
    ScriptToolCall,
    TextDelta,
    ToolCall,
)
from warden.testing import FakeLLMServer

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


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    """A server per test: retry counters and request logs must not leak between protocols."""
    with FakeLLMServer(SCRIPTS) as srv:
        yield srv


@pytest.fixture(params=["openai", "anthropic"])
async def make(
    request: pytest.FixtureRequest, server: FakeLLMServer
) -> AsyncIterator[Callable[..., ModelProvider]]:
    async with providers(server, request.param) as build:
        yield build


async def test_streamed_text_arrives_as_several_deltas_then_completed_with_usage(
    make: Callable[..., ModelProvider],
) -> None:
    items = await collect(make("text"))

    deltas = [i.text for i in items if isinstance(i, TextDelta)]
    assert len(deltas) > 2
    assert "".join(deltas) == "Hello from the fake server!"
    assert [type(i) for i in items].count(Completed) == 1
    response = completed(items).response
    assert response.message.content == "Hello from the fake server!"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.finish_reason == "stop"
    assert response.model == "text"


async def test_parallel_tool_calls_come_back_with_ids_names_and_raw_arguments(
    make: Callable[..., ModelProvider],
) -> None:
    response = completed(await collect(make("parallel"))).response

    calls = response.message.tool_calls
    assert [c.name for c in calls] == ["current_time", "calculator"]
    assert all(c.id for c in calls)
    assert calls[0].id != calls[1].id
    assert [json.loads(c.arguments) for c in calls] == [{"timezone": "UTC"}, {"expression": "1234 * 5678"}]
    assert response.message.content == "Let me check."
    assert response.finish_reason == "tool_calls"


async def test_malformed_arguments_text_is_passed_through_unchanged(
    make: Callable[..., ModelProvider],
) -> None:
    response = completed(await collect(make("bad-args"))).response

    assert [c.arguments for c in response.message.tool_calls] == ['{"expression": "1+']


async def test_rate_limited_twice_then_success_is_retried_by_the_sdk(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
) -> None:
    response = completed(await collect(make("rate-limited", max_retries=3))).response

    assert response.message.content == "finally"
    assert len(server.requests_for("rate-limited")) == 3


async def test_server_error_beyond_max_retries_is_a_retryable_model_error(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
) -> None:
    with pytest.raises(ModelError) as caught:
        await collect(make("server-error", max_retries=2))

    assert caught.value.retryable is True
    assert caught.value.status == 500
    assert len(server.requests_for("server-error")) == 3


async def test_bad_request_is_a_non_retryable_model_error_without_retries(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
) -> None:
    with pytest.raises(ModelError) as caught:
        await collect(make("bad-request", max_retries=3))

    assert caught.value.retryable is False
    assert caught.value.status == 400
    assert len(server.requests_for("bad-request")) == 1


async def test_unknown_model_is_a_non_retryable_404(make: Callable[..., ModelProvider]) -> None:
    with pytest.raises(ModelError) as caught:
        await collect(make("no-such-model"))

    assert (caught.value.status, caught.value.retryable) == (404, False)
    assert "no-such-model" in caught.value.message


async def test_malformed_stream_is_a_model_error(make: Callable[..., ModelProvider]) -> None:
    with pytest.raises(ModelError, match="malformed"):
        await collect(make("malformed"))


async def test_cancelling_a_slow_stream_closes_the_connection(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
) -> None:
    provider = make("slow")
    first_delta = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(USER_ONLY):
            first_delta.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(DEADLINE):
        await first_delta.wait()
    assert server.active_streams >= 1

    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)

    assert task in done
    assert task.cancelled()
    await server.wait_for_streams(0, within=2.0)


async def test_request_timeout_is_a_retryable_model_error(
    server: FakeLLMServer, make: Callable[..., ModelProvider]
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(ModelError, match="timed out") as caught:
        await collect(make("stalled", timeout=0.3, max_retries=0))

    assert caught.value.retryable is True
    assert loop.time() - started < 2.0
    await server.wait_for_streams(0, within=2.0)


async def test_step_is_chosen_by_assistant_turns_and_fills_in_the_last_tool_result(
    make: Callable[..., ModelProvider],
) -> None:
    request = ModelRequest(
        messages=(
            Message(role="user", content="what time is it?"),
            Message(role="assistant", tool_calls=(ToolCall("id_1", "current_time", "{}"),)),
            Message(role="tool", content="12:00 UTC", tool_call_id="id_1", name="current_time"),
        )
    )

    response = completed(await collect(make("two-turns"), request)).response

    assert response.message.content == "The tool said: 12:00 UTC"
