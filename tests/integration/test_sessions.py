"""Sessions over real HTTP: multi-turn history, the multitask policies and tenant isolation."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import MakeConfig, script, step
from warden.models.base import Message, ToolSpec
from warden.models.script import ScriptStep
from warden.testing import FakeLLMServer
from warden.testing.harness import WardenHarness

DEADLINE = 20.0
TERMINAL = {"task.completed", "task.failed", "task.cancelled"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def events_until(
    client: httpx.AsyncClient, task_id: str, stop_at: set[str] = TERMINAL, *, within: float = DEADLINE
) -> list[dict[str, Any]]:
    """The task's events over SSE up to and including the first whose type is in ``stop_at``."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                events.append(json.loads(sse.data))
                if events[-1]["type"] in stop_at:
                    break
    assert events, "the stream closed without any event"
    assert events[-1]["type"] in stop_at, f"stream ended at {events[-1]['type']}"
    return events


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    await events_until(client, task_id)
    body: dict[str, Any] = (await client.get(f"/v1/tasks/{task_id}")).json()
    return body


async def new_session(client: httpx.AsyncClient, multitask: str) -> str:
    response = await client.post("/v1/sessions", json={"agent": "tester", "multitask": multitask})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["multitask"] == multitask
    assert body["messages"] == []
    session_id: str = body["id"]
    return session_id


async def submit(client: httpx.AsyncClient, text: str, session_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": text}
    if session_id is None:
        body["agent"] = "tester"
    else:
        body["session_id"] = session_id
    response = await client.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    data: dict[str, Any] = response.json()
    return data


def by_input(slow_text: str, slow_delay: float) -> Any:
    """A fake-model function: the turn whose newest user message is ``slow`` waits before answering."""

    def reply(messages: list[Message], tools: list[ToolSpec]) -> ScriptStep:
        last_user = next(m.content for m in reversed(messages) if m.role == "user")
        if last_user == "slow":
            return ScriptStep(text=slow_text, delay=slow_delay)
        return ScriptStep(text=f"answered: {last_user}")

    return reply


# --- history ---------------------------------------------------------------------------------


async def test_second_task_in_a_session_sends_the_model_the_first_turn(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = unique("multiturn")
    config = make_config(
        script=script(name, step("Paris is the capital."), step("About 2.1 million people."))
    )
    async with WardenHarness(config) as h, h.client() as client:
        first = await submit(client, "What is the capital of France?")
        assert (await finished(client, first["id"]))["output"] == "Paris is the capital."
        second = await submit(client, "How many people live there?", first["session_id"])
        assert second["session_id"] == first["session_id"]
        assert (await finished(client, second["id"]))["output"] == "About 2.1 million people."

    requests = fake_llm.requests_for(name)
    assert len(requests) == 2
    messages = [(m["role"], m.get("content")) for m in requests[1]["messages"] if m["role"] != "system"]
    assert messages == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris is the capital."),
        ("user", "How many people live there?"),
    ]


async def test_session_shows_its_messages_after_a_task(make_config: MakeConfig) -> None:
    config = make_config(script=script(unique("history"), step("Hi, nice to meet you.")))
    async with WardenHarness(config) as h, h.client() as client:
        session_id = await new_session(client, "enqueue")
        task = await submit(client, "Hello!", session_id)
        await finished(client, task["id"])
        response = await client.get(f"/v1/sessions/{session_id}")

    assert response.status_code == 200
    session = response.json()
    assert session["id"] == session_id
    assert session["agent"] == "tester"
    assert session["active_task_id"] is None
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "Hello!"),
        ("assistant", "Hi, nice to meet you."),
    ]


# --- tenants ---------------------------------------------------------------------------------


async def test_another_tenants_session_is_404(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as mine:
        session_id = await new_session(mine, "enqueue")
        async with h.client(await h.key_for("other-tenant")) as theirs:
            response = await theirs.get(f"/v1/sessions/{session_id}")
            assert response.status_code == 404
            assert response.json()["code"] == "session_not_found"
            assert (await theirs.get("/v1/sessions")).json() == []


async def test_task_on_another_tenants_session_is_404_session_not_found(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as mine:
        session_id = await new_session(mine, "enqueue")
        async with h.client(await h.key_for("other-tenant")) as theirs:
            response = await theirs.post("/v1/tasks", json={"session_id": session_id, "input": "hijack"})
            assert response.status_code == 404
            assert response.json()["code"] == "session_not_found"
            assert (await theirs.get("/v1/tasks")).json()["items"] == []
        assert (await mine.get("/v1/tasks")).json()["items"] == []


async def test_session_with_an_unknown_agent_is_404_agent_not_found(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        response = await client.post("/v1/sessions", json={"agent": "nobody"})
        assert response.status_code == 404
        assert response.json()["code"] == "agent_not_found"
        assert (await client.get("/v1/sessions")).json() == []


# --- multitask policies ----------------------------------------------------------------------


async def test_reject_session_refuses_a_second_task_while_one_runs(make_config: MakeConfig) -> None:
    config = make_config(script=script(unique("reject"), step("Finally done.", delay=0.8)))
    async with WardenHarness(config) as h, h.client() as client:
        session_id = await new_session(client, "reject")
        first = await submit(client, "first", session_id)
        await events_until(client, first["id"], {"task.started"})

        response = await client.post("/v1/tasks", json={"session_id": session_id, "input": "second"})
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["code"] == "session_busy"
        assert body["message"]
        assert body["details"]["active_task_id"] == first["id"]
        assert [t["id"] for t in (await client.get("/v1/tasks")).json()["items"]] == [first["id"]]

        assert (await finished(client, first["id"]))["status"] == "completed"
        after = await client.post("/v1/tasks", json={"session_id": session_id, "input": "third"})
        assert after.status_code == 202, "an idle reject session takes a task again"


async def test_enqueue_session_runs_the_second_task_only_after_the_first(
    make_config: MakeConfig, database_url: str
) -> None:
    config = make_config(
        script=script(unique("enqueue"), step("first done", delay=0.6), step("second done")),
        database_url=database_url,
        worker={"concurrency": 4},
    )
    async with WardenHarness(config) as h, h.client() as client:
        session_id = await new_session(client, "enqueue")
        first = await submit(client, "first", session_id)
        await events_until(client, first["id"], {"task.started"})
        second = await submit(client, "second", session_id)
        assert second["status"] == "queued"
        assert (await client.get(f"/v1/tasks/{first['id']}")).json()["status"] == "running"

        first_events, second_events = await asyncio.gather(
            events_until(client, first["id"]), events_until(client, second["id"])
        )
        first_task = (await client.get(f"/v1/tasks/{first['id']}")).json()
        second_task = (await client.get(f"/v1/tasks/{second['id']}")).json()

    assert first_task["status"] == second_task["status"] == "completed"
    assert second_task["output"] == "second done"
    queued = second_events[0]
    assert queued["type"] == "task.queued"
    assert queued["data"]["held"] is True
    completed_first = first_events[-1]
    assert completed_first["type"] == "task.completed"
    started_second = next(e for e in second_events if e["type"] == "task.started")
    assert started_second["ts"] >= completed_first["ts"]
    second_started = datetime.fromisoformat(second_task["timings"]["started_at"])
    assert second_started >= datetime.fromisoformat(first_task["timings"]["finished_at"])
    # never two running at once: the second's run interval starts after the first's ends
    first_started = next(e for e in first_events if e["type"] == "task.started")
    assert first_started["ts"] <= completed_first["ts"] <= started_second["ts"]


async def test_interrupt_session_cancels_the_running_task_for_the_new_one(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = unique("interrupt")
    config = make_config(script=script(name, step("placeholder")), worker={"concurrency": 4})
    fake_llm.add_function(name, by_input("too late", slow_delay=30.0))
    async with WardenHarness(config) as h, h.client() as client:
        session_id = await new_session(client, "interrupt")
        first = await submit(client, "slow", session_id)
        await events_until(client, first["id"], {"task.started"})

        second = await submit(client, "quick", session_id)
        first_events = await events_until(client, first["id"])
        second_task = await finished(client, second["id"])
        first_task = (await client.get(f"/v1/tasks/{first['id']}")).json()

    assert first_events[-1]["type"] == "task.cancelled"
    assert first_task["status"] == "cancelled"
    assert first_task["output"] is None
    assert second_task["status"] == "completed"
    assert second_task["output"] == "answered: quick"


async def test_interrupt_session_cancels_a_queued_task_and_runs_the_new_one(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = unique("interrupt-queued")
    config = make_config(script=script(name, step("placeholder")), worker={"concurrency": 1})
    fake_llm.add_function(name, by_input("blocker done", slow_delay=0.5))
    async with WardenHarness(config) as h, h.client() as client:
        # The only worker slot is taken, so the session's first task stays queued.
        blocker = await submit(client, "slow")
        await events_until(client, blocker["id"], {"task.started"})
        session_id = await new_session(client, "interrupt")
        first = await submit(client, "first", session_id)
        second = await submit(client, "second", session_id)
        assert (await client.get(f"/v1/tasks/{first['id']}")).json()["status"] == "cancelled"

        await events_until(client, blocker["id"])
        try:
            await events_until(client, second["id"], within=5.0)
        except TimeoutError:
            stuck = (await client.get(f"/v1/tasks/{second['id']}")).json()
            pytest.fail(
                f"the new task never ran after the queued one was interrupted: status {stuck['status']}"
            )
        second_task = (await client.get(f"/v1/tasks/{second['id']}")).json()

    assert second_task["status"] == "completed"
    assert second_task["output"] == "answered: second"


async def test_concurrent_submits_to_a_reject_session_accept_exactly_one(
    make_config: MakeConfig, database_url: str
) -> None:
    async with WardenHarness(make_config(database_url=database_url), workers=0) as h, h.client() as client:
        session_id = await new_session(client, "reject")
        responses = await asyncio.gather(
            *(client.post("/v1/tasks", json={"session_id": session_id, "input": f"n{i}"}) for i in range(5))
        )
        assert sorted(r.status_code for r in responses) == [202, 409, 409, 409, 409]
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {"session_busy"}
        listed = (await client.get("/v1/tasks", params={"session": session_id})).json()["items"]
        assert [t["id"] for t in listed] == [r.json()["id"] for r in responses if r.status_code == 202]


async def test_concurrent_submits_to_an_enqueue_session_hold_all_but_one(
    make_config: MakeConfig, database_url: str
) -> None:
    async with WardenHarness(make_config(database_url=database_url), workers=0) as h, h.client() as client:
        session_id = await new_session(client, "enqueue")
        responses = await asyncio.gather(
            *(client.post("/v1/tasks", json={"session_id": session_id, "input": f"n{i}"}) for i in range(5))
        )
        assert [r.status_code for r in responses] == [202] * 5
        held = []
        for response in responses:
            (queued,) = await events_until(client, response.json()["id"], {"task.queued"})
            held.append(queued["data"]["held"])
        assert sorted(held) == [False, True, True, True, True]
