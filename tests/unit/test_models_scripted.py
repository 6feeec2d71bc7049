"""ScriptedProvider, FunctionProvider, script loading and `build_provider`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from warden.config import ModelConfig
from warden.errors import ConfigError, ModelError
from warden.models import (
    Completed,
    FunctionProvider,
    Message,
    ModelProvider,
    ModelRequest,
    Script,
    ScriptedProvider,
    ScriptError,
    ScriptStep,
    ScriptToolCall,
    StreamItem,
    TextDelta,
    ToolCall,
    build_provider,
    builtin_scripts,
    load_script,
)
from warden.models.anthropic import AnthropicProvider
from warden.models.openai import OpenAIProvider

DEADLINE = 5.0

TWO_STEPS = Script(
    name="two",
    steps=(
        ScriptStep(text="Calling the tool.", tool_calls=(ScriptToolCall(name="current_time"),)),
        ScriptStep(text="It is {{last_tool_result}}."),
    ),
    after_end="no more",
)


def conversation(assistant_turns: int, tool_result: str = "12:00 UTC") -> ModelRequest:
    messages: list[Message] = [Message(role="user", content="what time is it?")]
    for turn in range(assistant_turns):
        call = ToolCall(f"call_{turn}", "current_time", "{}")
        messages.append(Message(role="assistant", tool_calls=(call,)))
        messages.append(Message(role="tool", content=tool_result, tool_call_id=call.id, name="current_time"))
    return ModelRequest(messages=tuple(messages))


async def collect(provider: ModelProvider, request: ModelRequest) -> list[StreamItem]:
    async with asyncio.timeout(DEADLINE):
        return [item async for item in provider.stream(request)]


async def final(provider: ModelProvider, request: ModelRequest) -> Completed:
    last = (await collect(provider, request))[-1]
    assert isinstance(last, Completed)
    return last


async def test_first_turn_plays_the_first_step_with_its_tool_calls() -> None:
    response = (await final(ScriptedProvider(TWO_STEPS), conversation(0))).response

    assert response.message.content == "Calling the tool."
    assert [(c.id, c.name, c.arguments) for c in response.message.tool_calls] == [
        ("call_0_0", "current_time", "{}")
    ]
    assert response.finish_reason == "tool_calls"


async def test_step_is_chosen_by_the_number_of_assistant_turns() -> None:
    response = (await final(ScriptedProvider(TWO_STEPS), conversation(1))).response

    assert response.message.content.startswith("It is")
    assert response.finish_reason == "stop"


async def test_last_tool_result_template_is_filled_in() -> None:
    response = (await final(ScriptedProvider(TWO_STEPS), conversation(1, tool_result="09:30 UTC"))).response

    assert response.message.content == "It is 09:30 UTC."


async def test_after_end_text_answers_once_the_script_runs_out() -> None:
    response = (await final(ScriptedProvider(TWO_STEPS), conversation(2))).response

    assert response.message.content == "no more"


async def test_text_streams_in_chunks_of_chunk_size_then_one_completed() -> None:
    script = Script(name="chunks", steps=(ScriptStep(text="abcdefghij", chunk_size=3),))

    items = await collect(ScriptedProvider(script), conversation(0))

    assert [i.text for i in items if isinstance(i, TextDelta)] == ["abc", "def", "ghi", "j"]
    assert isinstance(items[-1], Completed)
    assert sum(isinstance(i, Completed) for i in items) == 1


async def test_usage_is_taken_from_the_step_when_given() -> None:
    script = Script(
        name="usage", steps=(ScriptStep(text="hi", usage={"input_tokens": 40, "output_tokens": 2}),)
    )

    usage = (await final(ScriptedProvider(script), conversation(0))).response.usage

    assert (usage.input_tokens, usage.output_tokens) == (40, 2)


async def test_usage_is_estimated_when_the_step_gives_none() -> None:
    usage = (await final(ScriptedProvider(TWO_STEPS), conversation(0))).response.usage

    assert usage.input_tokens > 0
    assert usage.output_tokens > 0


async def test_error_step_fails_the_first_times_identical_requests_then_succeeds() -> None:
    script = Script(name="flaky", steps=(ScriptStep(text="ok", error=ScriptError(status=503, times=2)),))
    provider = ScriptedProvider(script)

    for _ in range(2):
        with pytest.raises(ModelError) as caught:
            await collect(provider, conversation(0))
        assert (caught.value.status, caught.value.retryable) == (503, True)
    response = (await final(provider, conversation(0))).response

    assert response.message.content == "ok"


async def test_error_counts_are_kept_per_conversation() -> None:
    script = Script(name="flaky", steps=(ScriptStep(text="ok", error=ScriptError(status=429, times=1)),))
    provider = ScriptedProvider(script)

    with pytest.raises(ModelError):
        await collect(provider, conversation(0, tool_result="a"))
    with pytest.raises(ModelError):
        await collect(provider, ModelRequest(messages=(Message(role="user", content="another question"),)))


async def test_client_error_step_is_not_retryable() -> None:
    script = Script(name="denied", steps=(ScriptStep(error=ScriptError(status=401, message="bad key")),))

    with pytest.raises(ModelError, match="bad key") as caught:
        await collect(ScriptedProvider(script), conversation(0))

    assert (caught.value.status, caught.value.retryable) == (401, False)


async def test_malformed_step_is_a_non_retryable_model_error() -> None:
    script = Script(name="broken", steps=(ScriptStep(text="x", malformed=True),))

    with pytest.raises(ModelError, match="malformed response") as caught:
        await collect(ScriptedProvider(script), conversation(0))

    assert caught.value.retryable is False


async def test_cancelling_during_a_delay_stops_promptly() -> None:
    script = Script(name="slow", steps=(ScriptStep(text="late", delay=30.0),))
    running = asyncio.Event()

    async def consume() -> list[StreamItem]:
        running.set()  # nothing else awaits before the provider's delay, so the task is sleeping in it
        return await collect(ScriptedProvider(script), conversation(0))

    task = asyncio.create_task(consume())
    async with asyncio.timeout(DEADLINE):
        await running.wait()

    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)

    assert task in done
    assert task.cancelled()


async def test_chunk_delay_paces_the_deltas() -> None:
    script = Script(name="paced", steps=(ScriptStep(text="abcdef", chunk_size=2, chunk_delay=0.05),))
    loop = asyncio.get_running_loop()
    started = loop.time()

    await collect(ScriptedProvider(script), conversation(0))

    assert loop.time() - started >= 0.09  # two pauses between three deltas


async def test_function_provider_streams_the_step_a_sync_function_returns() -> None:
    seen: list[int] = []

    def step(request: ModelRequest) -> ScriptStep:
        seen.append(len(request.messages))
        return ScriptStep(text=f"you sent {len(request.messages)} messages")

    response = (await final(FunctionProvider(step), conversation(1))).response

    assert response.message.content == "you sent 3 messages"
    assert seen == [3]
    assert response.model == "function"


async def test_function_provider_awaits_an_async_function() -> None:
    async def step(request: ModelRequest) -> ScriptStep:
        await asyncio.sleep(0)
        return ScriptStep(tool_calls=(ScriptToolCall(name="calculator", arguments={"expression": "2+2"}),))

    response = (await final(FunctionProvider(step, name="fn"), conversation(0))).response

    assert [json.loads(c.arguments) for c in response.message.tool_calls] == [{"expression": "2+2"}]
    assert response.model == "fn"


def test_scripted_and_function_providers_satisfy_the_protocol() -> None:
    assert isinstance(ScriptedProvider(TWO_STEPS), ModelProvider)
    assert isinstance(FunctionProvider(lambda request: ScriptStep()), ModelProvider)


def test_demo_is_a_builtin_script() -> None:
    assert "demo" in builtin_scripts()


async def test_demo_script_calls_time_and_calculator_in_parallel_then_writes_a_note() -> None:
    provider = ScriptedProvider(load_script("demo"))

    first = (await final(provider, conversation(0))).response
    second = (await final(provider, conversation(1, tool_result="7006652"))).response

    assert [c.name for c in first.message.tool_calls] == ["current_time", "calculator"]
    assert json.loads(first.message.tool_calls[1].arguments) == {"expression": "1234 * 5678"}
    assert "7006652" in second.message.content
    assert [c.name for c in second.message.tool_calls] == ["notes_write"]
    assert set(json.loads(second.message.tool_calls[0].arguments)) == {"title", "body"}


def test_script_path_is_loaded_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("- text: hello\n- text: bye\n", encoding="utf-8")

    script = load_script(str(path))

    assert script.name == "mine"
    assert [s.text for s in script.steps] == ["hello", "bye"]


def test_unknown_script_is_a_config_error_listing_the_builtin_names() -> None:
    with pytest.raises(ConfigError, match="demo") as caught:
        load_script("no-such-script")

    assert "no-such-script" in caught.value.message


def test_build_provider_gives_a_scripted_provider_for_the_demo() -> None:
    provider = build_provider(ModelConfig(provider="scripted"))

    assert isinstance(provider, ScriptedProvider)
    assert provider.script.name == "demo"
    assert provider.name == "scripted"


async def test_build_provider_picks_the_sdk_backends_by_provider() -> None:
    openai = build_provider(ModelConfig(provider="openai", model="gpt-x", base_url="http://127.0.0.1:9/v1"))
    anthropic = build_provider(
        ModelConfig(provider="anthropic", model="claude-x", base_url="http://127.0.0.1:9")
    )
    try:
        assert isinstance(openai, OpenAIProvider)
        assert openai.name == "gpt-x"
        assert isinstance(anthropic, AnthropicProvider)
        assert anthropic.name == "claude-x"
    finally:
        await openai.aclose()
        await anthropic.aclose()
