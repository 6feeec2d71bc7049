"""The agent loop as a user sees it: malformed model output becomes an error observation the
model can correct, limits end a task cleanly with their reason, and a model that keeps failing
ends the task `failed` with its error after the configured attempts."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import MakeConfig, script, step
from warden.config import ModelPrice
from warden.errors import ConfigError
from warden.models.script import ScriptError, ScriptStep
from warden.runtime import Runtime
from warden.testing import FakeLLMServer, WardenHarness


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def run_task(
    client: httpx.AsyncClient, text: str = "go"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit, follow the events to the end, and return the final task and its events."""
    task = (await client.post("/v1/tasks", json={"agent": "tester", "input": text})).json()
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        async with aconnect_sse(client, "GET", f"/v1/tasks/{task['id']}/events") as source:
            async for sse in source.aiter_sse():
                events.append(json.loads(sse.data))
    return (await client.get(f"/v1/tasks/{task['id']}")).json(), events


def tool_results(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "tool.finished"]


def last_tool_message(fake_llm: FakeLLMServer, model: str) -> dict[str, Any]:
    """The last tool message the model received, with its content as the tool returned it: the
    `<tool_output>` element that marks it as untrusted data is checked and taken off."""
    messages = fake_llm.requests_for(model)[-1]["messages"]
    tool_messages: list[dict[str, Any]] = [m for m in messages if m["role"] == "tool"]
    message = dict(tool_messages[-1])
    match = re.fullmatch(r'<tool_output tool="[^"]+">\n(.*)\n</tool_output>', message["content"], re.DOTALL)
    assert match is not None, message["content"]
    message["content"] = match[1]
    return message


async def test_unknown_tool_goes_back_to_the_model_as_an_error(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("unknown-tool")
    config = make_config(script=script(name, step("", ("rm_rf", {"path": "/"})), step("Sorry, I cannot.")))
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "completed"
    (result,) = tool_results(events)
    assert result["is_error"] is True
    assert result["ran"] is False
    assert "unknown tool 'rm_rf'" in result["content"]
    assert "calculator" in last_tool_message(fake_llm, name)["content"]


async def test_malformed_json_arguments_go_back_as_an_error(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("bad-json")
    config = make_config(
        script=script(
            name,
            step("", ("calculator", '{"expression": "1+')),
            step("", ("calculator", {"expression": "1+1"})),
            step("2"),
        )
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "completed"
    first, second = tool_results(events)
    assert first["is_error"] is True
    assert "not valid JSON" in first["content"]
    assert second == {**second, "is_error": False, "content": "2", "ran": True}


async def test_schema_violation_goes_back_as_an_error(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("schema")
    config = make_config(
        script=script(name, step("", ("calculator", {"expression": 12, "extra": True})), step("ok"))
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "completed"
    (result,) = tool_results(events)
    assert result["is_error"] is True
    assert "do not match its schema" in result["content"]
    assert "expression" in result["content"]


async def test_arguments_that_are_not_an_object_go_back_as_an_error(make_config: MakeConfig) -> None:
    config = make_config(script=script(_name("array-args"), step("", ("calculator", "[1, 2]")), step("ok")))
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "completed"
    assert "must be a JSON object" in tool_results(events)[0]["content"]


async def test_a_tool_error_is_an_observation_not_a_crash(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("tool-error")
    config = make_config(
        script=script(name, step("", ("calculator", {"expression": "1/0"})), step("Division by zero."))
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "completed"
    assert tool_results(events)[0]["is_error"] is True
    assert last_tool_message(fake_llm, name)["content"].startswith("cannot evaluate")


async def test_parallel_tool_calls_run_and_all_results_reach_the_model(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("parallel")
    config = make_config(
        script=script(
            name,
            step("", ("calculator", {"expression": "2*3"}), ("calculator", {"expression": "7*6"})),
            step("6 and 42"),
        )
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "completed"
    assert sorted(r["content"] for r in tool_results(events)) == ["42", "6"]
    messages = fake_llm.requests_for(name)[-1]["messages"]
    assert [m["content"] for m in messages if m["role"] == "tool"] == [
        '<tool_output tool="calculator">\n6\n</tool_output>',
        '<tool_output tool="calculator">\n42\n</tool_output>',
    ]


async def test_max_steps_ends_the_task_with_its_reason(make_config: MakeConfig) -> None:
    looping = step("again", ("calculator", {"expression": "1+1"}))
    config = make_config(script=script(_name("loop"), *([looping] * 10)), limits={"max_steps": 3})
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "max_steps"
    assert len([e for e in events if e["type"] == "model.message"]) == 3


async def test_max_tokens_ends_the_task_with_its_reason(make_config: MakeConfig) -> None:
    chatty = ScriptStep(text="words", tool_calls=(), usage={"input_tokens": 600, "output_tokens": 600})
    busy = chatty.model_copy(update={"tool_calls": step("", ("calculator", {"expression": "1"})).tool_calls})
    config = make_config(script=script(_name("tokens"), busy, busy, busy), limits={"max_tokens": 2000})
    async with WardenHarness(config) as h, h.client() as client:
        task, _ = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "max_tokens"


async def test_max_tool_calls_ends_the_task_before_the_call_that_would_cross_it(
    make_config: MakeConfig,
) -> None:
    calc = ("calculator", {"expression": "1+1"})
    config = make_config(
        script=script(_name("calls"), step("", calc), step("", calc, calc), step("done")),
        limits={"max_tool_calls": 2},
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "max_tool_calls"
    assert sum(e["type"] == "tool.finished" for e in events) == 1


async def test_max_cost_ends_the_task_with_its_reason(make_config: MakeConfig) -> None:
    pricey = ScriptStep(text="", tool_calls=step("", ("calculator", {"expression": "1"})).tool_calls,
                        usage={"input_tokens": 1000, "output_tokens": 1000})  # fmt: skip
    config = make_config(script=script(_name("cost"), pricey, pricey, pricey), limits={"max_cost": 0.015})
    model = config.models["default"]
    config.models["default"] = model.model_copy(
        update={"price": ModelPrice(input_per_mtok=5.0, output_per_mtok=5.0)}  # $0.01 per step
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, _ = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "max_cost" and "$0.02" in task["error"]["message"]


async def test_a_cost_budget_without_a_price_is_a_configuration_error(make_config: MakeConfig) -> None:
    config = make_config(script=script(_name("noprice"), step("hi")), limits={"max_cost": 1.0})
    with pytest.raises(ConfigError, match="no price"):
        await Runtime.open(config)


async def test_timeout_ends_the_task_with_its_reason(make_config: MakeConfig) -> None:
    config = make_config(
        script=script(_name("slow"), step("", ("wait", {"seconds": 30}))), limits={"timeout": 0.5}
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, _ = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "timeout"


async def test_a_model_that_keeps_failing_fails_the_task_with_its_error(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("down")
    failing = ScriptStep(text="never", error=ScriptError(status=503, message="overloaded", times=100))
    config = make_config(script=script(name, failing), worker={"max_attempts": 2})
    async with WardenHarness(config) as h, h.client() as client:
        task, events = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "model_error"
    assert task["attempt"] == 2
    assert [e["type"] for e in events].count("task.requeued") == 1
    # Two attempts, each with the provider's own retries (max_retries=2): 3 requests each.
    assert len(fake_llm.requests_for(name)) == 6


async def test_a_client_error_from_the_model_fails_at_once(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = _name("bad-request")
    config = make_config(
        script=script(name, ScriptStep(error=ScriptError(status=400, message="bad", times=100)))
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, _ = await run_task(client)
    assert task["status"] == "failed"
    assert task["attempt"] == 1
    assert len(fake_llm.requests_for(name)) == 1


async def test_a_malformed_model_stream_is_retried_then_fails_cleanly(make_config: MakeConfig) -> None:
    config = make_config(
        script=script(_name("garbage"), ScriptStep(malformed=True)), worker={"max_attempts": 1}
    )
    async with WardenHarness(config) as h, h.client() as client:
        task, _ = await run_task(client)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "model_error"
