"""The task API over real HTTP: submit, read, list, cancel, errors, tenants and scopes."""

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
from warden.testing.harness import WardenHarness

DEADLINE = 20.0
TERMINAL = {"task.completed", "task.failed", "task.cancelled"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def follow_to_end(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    """Every event of the task, read over SSE until the stream closes after the terminal one."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                events.append(json.loads(sse.data))
    assert events, "the stream closed without any event"
    assert events[-1]["type"] in TERMINAL
    return events


async def finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    await follow_to_end(client, task_id)
    response = await client.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/tasks", json={"agent": "tester", "input": "hello", **body})
    assert response.status_code == 202, response.text
    data: dict[str, Any] = response.json()
    return data


async def all_task_ids(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/v1/tasks", params={"limit": 500})
    assert response.status_code == 200
    return [t["id"] for t in response.json()["items"]]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert {"code", "message"} <= set(body) <= {"code", "message", "details"}
    assert isinstance(body["message"], str)
    assert body["message"].strip()
    return body


# --- submit and complete ---------------------------------------------------------------------


async def test_submitted_task_is_accepted_at_once_and_completes_with_usage_and_timings(
    make_config: MakeConfig, database_url: str
) -> None:
    name = unique("submit")
    config = make_config(script=script(name, step("The answer is 42.")), database_url=database_url)
    async with WardenHarness(config) as h, h.client() as client:
        response = await client.post("/v1/tasks", json={"agent": "tester", "input": "What is 6*7?"})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert set(accepted) == {"id", "status", "session_id", "events_url"}
        assert accepted["id"].startswith("task_")
        assert accepted["status"] == "queued"
        assert accepted["session_id"]
        assert accepted["events_url"] == f"/v1/tasks/{accepted['id']}/events"
        assert response.headers["location"] == f"/v1/tasks/{accepted['id']}"

        task = await finished(client, accepted["id"])

    assert task["status"] == "completed"
    assert task["output"] == "The answer is 42."
    assert task["error"] is None
    assert task["input"] == "What is 6*7?"
    assert task["agent"] == "tester"
    assert task["session_id"] == accepted["session_id"]
    assert task["attempt"] == 1
    by_model = task["usage"]["by_model"]
    assert set(by_model) == {name}
    assert by_model[name]["input_tokens"] > 0
    assert by_model[name]["output_tokens"] > 0
    total = task["usage"]["total"]
    assert total["total_tokens"] == total["input_tokens"] + total["output_tokens"] > 0
    timings = task["timings"]
    assert timings["queue_wait_ms"] is not None
    assert timings["queue_wait_ms"] >= 0
    assert timings["duration_ms"] is not None
    assert timings["duration_ms"] > 0
    created, started, ended = (
        datetime.fromisoformat(timings[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= ended


# --- errors ----------------------------------------------------------------------------------


async def test_malformed_json_body_is_400_invalid_json(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        response = await client.post(
            "/v1/tasks",
            content=b'{"agent": "tester", "input": ',
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": "tester"}, "input"),
        ({"agent": "tester", "input": ""}, "input"),
        ({"agent": "tester", "input": "hi", "colour": "blue"}, "colour"),
        ({"agent": "tester", "input": 42}, "input"),
        ({"agent": "tester", "input": "hi", "metadata": "not a mapping"}, "metadata"),
    ],
    ids=["missing-input", "empty-input", "unknown-field", "input-wrong-type", "metadata-wrong-type"],
)
async def test_invalid_task_body_is_422_invalid_input_naming_the_field(
    make_config: MakeConfig, body: dict[str, Any], field: str
) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        error = assert_error(await client.post("/v1/tasks", json=body), 422, "invalid_input")
        assert field in error["message"]


async def test_unknown_agent_is_404_agent_not_found(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        response = await client.post("/v1/tasks", json={"agent": "nobody", "input": "hi"})
        assert_error(response, 404, "agent_not_found")


async def test_request_without_api_key_is_401_missing_api_key(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h:
        async with httpx.AsyncClient(base_url=h.url) as anonymous:
            assert_error(await anonymous.get("/v1/tasks"), 401, "missing_api_key")
            response = await anonymous.post("/v1/tasks", json={"agent": "tester", "input": "hi"})
            assert_error(response, 401, "missing_api_key")


@pytest.mark.parametrize("key", ["wk_000000000000_notarealsecret", "not-even-shaped-like-a-key"])
async def test_bad_api_key_is_401_invalid_api_key(make_config: MakeConfig, key: str) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client(key) as client:
        assert_error(await client.get("/v1/tasks"), 401, "invalid_api_key")
        assert_error(
            await client.post("/v1/tasks", json={"agent": "tester", "input": "hi"}), 401, "invalid_api_key"
        )


async def test_unknown_task_id_is_404_task_not_found(make_config: MakeConfig) -> None:
    missing = "task_" + "0" * 26
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        assert_error(await client.get(f"/v1/tasks/{missing}"), 404, "task_not_found")
        assert_error(await client.post(f"/v1/tasks/{missing}/cancel"), 404, "task_not_found")
        assert_error(await client.get(f"/v1/tasks/{missing}/events"), 404, "task_not_found")


async def test_unknown_route_is_404_with_code_and_message(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        assert_error(await client.get("/v1/no-such-thing"), 404, "not_found")


async def test_wrong_method_is_405_with_code_and_message(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        assert_error(await client.delete("/v1/tasks"), 405, "method_not_allowed")


async def test_malformed_requests_change_nothing(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        session_id = (await submit(client))["session_id"]
        tasks_before = await all_task_ids(client)
        sessions_before = (await client.get("/v1/sessions", params={"limit": 500})).json()
        json_header = {"Content-Type": "application/json"}
        bad_requests: list[dict[str, Any]] = [
            {"content": b"{", "headers": json_header},
            {"json": {"agent": "tester"}},
            {"json": {"agent": "tester", "input": ""}},
            {"json": {"agent": "tester", "input": "hi", "bogus": True}},
            {"json": {"agent": "tester", "input": ["hi"]}},
            {"json": {"agent": "tester", "input": "hi", "metadata": {"k": [1]}}},
            {"json": {"agent": "nobody", "input": "hi"}},
            {"json": {"input": "hi"}},
            {"json": {"agent": "tester", "input": "hi", "session_id": "not-an-id"}},
            {"json": {"agent": "tester", "input": "hi", "session_id": "ses_" + "0" * 26}},
            {"json": {"agent": "demo", "input": "hi", "session_id": session_id}},
        ]
        for request in bad_requests:
            response = await client.post("/v1/tasks", **request)
            assert 400 <= response.status_code < 500, (request, response.text)
            assert {"code", "message"} <= set(response.json())
        assert await all_task_ids(client) == tasks_before
        assert (await client.get("/v1/sessions", params={"limit": 500})).json() == sessions_before


# --- tenants and scopes ----------------------------------------------------------------------


async def test_another_tenants_task_is_404_for_get_cancel_and_events(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as mine:
        task = await submit(mine)
        async with h.client(await h.key_for("other-tenant")) as theirs:
            assert_error(await theirs.get(f"/v1/tasks/{task['id']}"), 404, "task_not_found")
            assert_error(await theirs.post(f"/v1/tasks/{task['id']}/cancel"), 404, "task_not_found")
            assert_error(await theirs.get(f"/v1/tasks/{task['id']}/events"), 404, "task_not_found")
        still = (await mine.get(f"/v1/tasks/{task['id']}")).json()
        assert still["status"] == "queued"
        assert still["cancel_requested"] is False


async def test_task_list_shows_only_the_callers_tenant(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as mine:
        async with h.client(await h.key_for("other-tenant")) as theirs:
            own = {(await submit(mine))["id"] for _ in range(2)}
            other = {(await submit(theirs))["id"] for _ in range(3)}
            assert set(await all_task_ids(mine)) == own
            assert set(await all_task_ids(theirs)) == other


async def test_read_only_key_cannot_submit_403_missing_scope(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as admin:
        async with h.client(await h.key_for("default", scopes=["tasks:read"])) as reader:
            assert (await reader.get("/v1/tasks")).status_code == 200
            response = await reader.post("/v1/tasks", json={"agent": "tester", "input": "hi"})
            assert_error(response, 403, "missing_scope")
        assert await all_task_ids(admin) == []


# --- idempotency, listing, cancel ------------------------------------------------------------


async def test_repeated_idempotency_key_returns_200_and_the_same_task(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        body = {"agent": "tester", "input": "once only", "idempotency_key": "order-17"}
        first = await client.post("/v1/tasks", json=body)
        assert first.status_code == 202
        again = await client.post("/v1/tasks", json=body)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert await all_task_ids(client) == [first.json()["id"]]


async def test_concurrent_submits_with_one_idempotency_key_all_return_the_same_task(
    make_config: MakeConfig, database_url: str
) -> None:
    async with WardenHarness(make_config(database_url=database_url), workers=0) as h, h.client() as client:
        body = {"agent": "tester", "input": "once only", "idempotency_key": "order-18"}
        responses = await asyncio.gather(*(client.post("/v1/tasks", json=body) for _ in range(5)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 200, 200, 202], [r.text for r in responses]
        ids = {r.json()["id"] for r in responses}
        assert len(ids) == 1
        assert await all_task_ids(client) == list(ids)


async def test_task_list_filters_by_status_agent_and_session(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        created = await client.post("/v1/sessions", json={"agent": "tester"})
        assert created.status_code == 201
        session_id = created.json()["id"]
        in_session = [(await submit(client, session_id=session_id))["id"] for _ in range(2)]
        lone = (await submit(client))["id"]
        demo = (await submit(client, agent="demo"))["id"]
        cancelled = await client.post(f"/v1/tasks/{lone}/cancel")
        assert cancelled.json()["status"] == "cancelled"

        async def ids(**params: str) -> set[str]:
            response = await client.get("/v1/tasks", params=params)
            assert response.status_code == 200, response.text
            return {t["id"] for t in response.json()["items"]}

        assert await ids(status="cancelled") == {lone}
        assert await ids(status="queued") == {*in_session, demo}
        assert await ids(agent="demo") == {demo}
        assert await ids(agent="tester") == {*in_session, lone}
        assert await ids(session=session_id) == set(in_session)
        assert await ids(agent="tester", status="queued") == set(in_session)
        assert_error(await client.get("/v1/tasks", params={"status": "sleeping"}), 422, "invalid_input")


async def test_cursor_pagination_returns_every_task_once(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        submitted = [(await submit(client, input=f"task {i}"))["id"] for i in range(5)]
        seen: list[str] = []
        pages = 0
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = (await client.get("/v1/tasks", params=params)).json()
            pages += 1
            assert len(page["items"]) <= 2
            seen += [t["id"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages < 10, "pagination does not end"
        assert sorted(seen) == sorted(submitted)
        assert len(seen) == len(set(seen)) == 5
        assert seen == list(reversed(submitted)), "newest first"


async def test_bad_cursor_is_422_invalid_cursor(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        assert_error(await client.get("/v1/tasks", params={"cursor": "garbage!"}), 422, "invalid_cursor")


async def test_cancel_of_a_finished_task_returns_it_unchanged(make_config: MakeConfig) -> None:
    config = make_config(script=script(unique("cancel-done"), step("done")))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = (await submit(client))["id"]
        before = await finished(client, task_id)
        assert before["status"] == "completed"
        response = await client.post(f"/v1/tasks/{task_id}/cancel")
        assert response.status_code == 202
        after = response.json()
        assert after["status"] == "completed"
        assert after["output"] == "done"
        assert after["cancel_requested"] is False
        assert after["last_seq"] == before["last_seq"]
        assert (await client.get(f"/v1/tasks/{task_id}")).json() == before


# --- agents, health, docs --------------------------------------------------------------------


async def test_agents_list_includes_the_configured_agent(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        response = await client.get("/v1/agents")
        assert response.status_code == 200
        agents = {a["name"]: a for a in response.json()}
        assert "tester" in agents
        assert agents["tester"]["tools"] == ["calculator", "wait"]
        one = await client.get("/v1/agents/tester")
        assert one.status_code == 200
        assert one.json()["name"] == "tester"
        assert one.json()["versions"] == [agents["tester"]["version"]]


async def test_unknown_agent_lookup_is_404(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        assert_error(await client.get("/v1/agents/nope"), 404, "agent_not_found")


async def test_health_and_readiness_answer_200(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, httpx.AsyncClient(base_url=h.url) as anonymous:
        healthz = await anonymous.get("/healthz")
        assert healthz.status_code == 200
        assert healthz.json()["status"] == "ok"
        readyz = await anonymous.get("/readyz")
        assert readyz.status_code == 200
        assert readyz.json() == {"status": "ok", "checks": {"database": "ok"}}


async def test_openapi_document_and_docs_page_are_served(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, httpx.AsyncClient(base_url=h.url) as anonymous:
        docs = await anonymous.get("/docs")
        assert docs.status_code == 200
        assert "text/html" in docs.headers["content-type"]
        spec = await anonymous.get("/openapi.json")
        assert spec.status_code == 200
        paths = spec.json()["paths"]
        for path in ("/v1/tasks", "/v1/tasks/{task_id}", "/v1/tasks/{task_id}/events", "/v1/sessions"):
            assert path in paths


async def test_a_model_that_sends_lone_surrogates_cannot_break_the_api(make_config: MakeConfig) -> None:
    """The model's text and tool arguments arrive as JSON; a ``\\ud800`` escape in them parses
    into a string no response can encode. Stored as is, it made the task, its session and every
    listing of the tenant's tasks answer 500. Warden keeps U+FFFD in its place."""
    name = unique("surrogate")
    config = make_config(
        script=script(
            name,
            step("", ("calculator", '{"expression": "1+1", "note": "\\ud800"}')),
            step("broken \ud800 text \udfff end"),
        ),
        tools=["calculator"],
    )
    async with WardenHarness(config) as h, h.client() as client:
        accepted = (await client.post("/v1/tasks", json={"agent": "tester", "input": "go"})).json()
        events = await follow_to_end(client, accepted["id"])
        task = (await client.get(f"/v1/tasks/{accepted['id']}")).json()
        listing = await client.get("/v1/tasks")
        session = await client.get(f"/v1/sessions/{accepted['session_id']}")
    assert task["status"] == "completed"
    assert task["output"] == "broken \ufffd text \ufffd end"
    requested = next(e for e in events if e["type"] == "tool.requested")
    assert json.loads(requested["data"]["arguments"]) == {"expression": "1+1", "note": "\ufffd"}
    assert listing.status_code == 200 and [t["id"] for t in listing.json()["items"]] == [accepted["id"]]
    assert session.status_code == 200, session.text
