"""Human approvals end to end: a policy answers `ask`, the task parks durably (awaiting_approval,
no worker slot held), a person approves, denies or edits through the API, and the task resumes
on any worker, also after a restart; approvals expire with their default decision and are
decided once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import MakeConfig, script, step
from tests.integration.test_api_tasks import follow_to_end
from warden.testing import WardenHarness

ASK_NOTES = {
    "rules": [
        {"name": "notes-need-a-human", "tools": ["notes_write"], "decision": "ask", "reason": "writes notes"}
    ]
}
DEADLINE = 30.0


def _config(make_config: MakeConfig, *steps: Any, **extra: Any) -> Any:
    return make_config(
        script=script(f"approve-{uuid.uuid4().hex[:8]}", *steps),
        tools=["notes_write", "notes_read", "calculator"],
        policy=extra.pop("policy", ASK_NOTES),
        **extra,
    )


NOTE = ("notes_write", {"title": "plan", "body": "ship it"})


async def _submit(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/tasks", json={"agent": "tester", "input": "write the plan"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def _status(client: httpx.AsyncClient, task_id: str, wanted: str) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE):
        while True:
            task: dict[str, Any] = (await client.get(f"/v1/tasks/{task_id}")).json()
            if task["status"] == wanted:
                return task
            assert task["status"] not in {"completed", "failed", "cancelled"} - {wanted}, task
            await asyncio.sleep(0.05)


async def _pending(client: httpx.AsyncClient, task_id: str, count: int = 1) -> list[dict[str, Any]]:
    await _status(client, task_id, "awaiting_approval")
    response = await client.get("/v1/approvals", params={"status": "pending", "task_id": task_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    assert len(items) == count, items
    return items


async def test_ask_parks_the_task_without_holding_a_worker_and_approval_resumes_it(
    make_config: MakeConfig,
) -> None:
    config = _config(make_config, step("", NOTE), step("Saved."), worker={"concurrency": 1})
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        assert approval["tool"] == "notes_write" and approval["arguments"] == NOTE[1]
        assert approval["rule"] == "notes-need-a-human"
        # The only worker slot is free: a task that needs no approval runs to the end meanwhile.
        other = await client.post("/v1/tasks", json={"agent": "tester", "input": "no tools"})
        assert other.status_code == 202
        decided = await client.post(
            f"/v1/approvals/{approval['id']}", json={"decision": "approve", "reason": "ok"}
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "approved" and decided.json()["decided_by"].startswith("key:")
        events = await follow_to_end(client, task_id)
        # The ask and the approval are in the tamper-evident audit log, and the chain verifies.
        audit = (await client.get("/v1/audit", params={"limit": 100})).json()["items"]
        actions = {
            (a["action"], a["outcome"]) for a in audit if task_id in (a["subject"], a["data"].get("task_id"))
        }
        assert {("tool.decision", "ask"), ("approval.decided", "approved")} <= actions, audit
        assert (await client.get("/v1/audit/verify")).json()["ok"] is True
    types = [e["type"] for e in events]
    assert types[-1] == "task.completed"
    assert {"policy.decision", "approval.required", "approval.decided"} <= set(types)
    (finished,) = [e for e in events if e["type"] == "tool.finished"]
    assert finished["data"]["ran"] and not finished["data"]["is_error"]


async def test_a_denied_call_goes_back_to_the_model_with_the_reason(make_config: MakeConfig) -> None:
    config = _config(make_config, step("", NOTE), step("Understood, not saved."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny", "reason": "not today"})
        events = await follow_to_end(client, task_id)
    (finished,) = [e for e in events if e["type"] == "tool.finished"]
    assert finished["data"]["is_error"] and not finished["data"]["ran"]
    assert "denied" in finished["data"]["content"] and "not today" in finished["data"]["content"]
    assert events[-1]["type"] == "task.completed"


async def test_the_tool_gets_the_arguments_the_approver_edited(make_config: MakeConfig) -> None:
    config = _config(make_config, step("", NOTE), step("", ("notes_read", {"title": "plan"})), step("Done."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        edited = {"title": "plan", "body": "ship it on Monday"}
        await client.post(
            f"/v1/approvals/{approval['id']}", json={"decision": "approve", "arguments": edited}
        )
        events = await follow_to_end(client, task_id)
    read = [e for e in events if e["type"] == "tool.finished" and e["data"]["name"] == "notes_read"]
    assert "ship it on Monday" in read[0]["data"]["content"]


async def test_an_approval_is_decided_once(make_config: MakeConfig) -> None:
    config = _config(make_config, step("", NOTE), step("Saved."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        first = await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        second = await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny"})
        assert first.status_code == 200
        assert second.status_code == 409 and second.json()["code"] == "already_decided"
        await follow_to_end(client, task_id)


async def test_an_unanswered_approval_expires_with_the_default_decision(make_config: MakeConfig) -> None:
    config = _config(
        make_config, step("", NOTE), step("Not saved."), approvals={"timeout": 0.5, "on_expiry": "deny"}
    )
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        events = await follow_to_end(client, task_id)
        record = (await client.get(f"/v1/approvals/{approval['id']}")).json()
    assert record["status"] == "expired" and record["decided_by"] == "system:expired"
    (finished,) = [e for e in events if e["type"] == "tool.finished"]
    assert "not approved in time" in finished["data"]["content"]


async def test_several_waiting_calls_of_one_step_resume_the_task_when_all_are_decided(
    make_config: MakeConfig,
) -> None:
    second = ("notes_write", {"title": "other", "body": "b"})
    config = _config(
        make_config, step("", NOTE, second, ("calculator", {"expression": "6*7"})), step("Both done.")
    )
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        first, other = await _pending(client, task_id, count=2)
        await client.post(f"/v1/approvals/{first['id']}", json={"decision": "approve"})
        await asyncio.sleep(0.3)
        assert (await client.get(f"/v1/tasks/{task_id}")).json()["status"] == "awaiting_approval"
        await client.post(f"/v1/approvals/{other['id']}", json={"decision": "deny"})
        events = await follow_to_end(client, task_id)
    finished = {e["data"]["call_id"]: e["data"] for e in events if e["type"] == "tool.finished"}
    calculator = [d for d in finished.values() if d["name"] == "calculator"]
    # The allowed call ran once, before the task parked; the resumed attempt reused its result.
    assert len(calculator) == 1 and calculator[0]["ran"] and "42" in calculator[0]["content"]
    assert sorted(d["is_error"] for d in finished.values() if d["name"] == "notes_write") == [False, True]
    assert events[-1]["type"] == "task.completed"


async def test_a_parked_task_resumes_after_a_restart(make_config: MakeConfig) -> None:
    config = _config(make_config, step("", NOTE), step("Saved after the restart."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        admin = h.admin_key
    async with WardenHarness(config) as h2, h2.client(admin) as client:
        await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        events = await follow_to_end(client, task_id)
    assert events[-1]["type"] == "task.completed"


async def test_deciding_needs_the_scope_and_the_tenant(make_config: MakeConfig) -> None:
    config = _config(make_config, step("", NOTE), step("Saved."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        reader = await h.key_for("default", scopes=["tasks:read", "approvals:read"])
        stranger = await h.key_for("other-tenant", scopes=["approvals:read", "approvals:write"])
        async with h.client(reader) as read_only, h.client(stranger) as other:
            refused = await read_only.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
            hidden = await other.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
            listed = (await other.get("/v1/approvals")).json()["items"]
        assert refused.status_code == 403 and refused.json()["code"] == "missing_scope"
        assert hidden.status_code == 404 and listed == []
        bad = await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "maybe"})
        assert bad.status_code == 422
        await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        await follow_to_end(client, task_id)


@pytest.mark.parametrize("arguments", ["[1, 2]", '{"x": NaN}', '"text"'])
async def test_edited_arguments_that_are_not_a_json_object_change_nothing(
    make_config: MakeConfig, arguments: str
) -> None:
    config = _config(make_config, step("", NOTE), step("Saved."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        body = '{"decision": "approve", "arguments": ' + arguments + "}"
        response = await client.post(
            f"/v1/approvals/{approval['id']}", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422), response.text
        still = (await client.get(f"/v1/approvals/{approval['id']}")).json()
        assert still["status"] == "pending"
        await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        await follow_to_end(client, task_id)


async def test_cancelling_a_waiting_task_closes_its_approvals(make_config: MakeConfig) -> None:
    config = _config(make_config, step("", NOTE), step("Saved."))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await _submit(client)
        (approval,) = await _pending(client, task_id)
        cancelled = await client.post(f"/v1/tasks/{task_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        record = (await client.get(f"/v1/approvals/{approval['id']}")).json()
        assert record["status"] == "expired" and record["decided_by"] == "system:task-ended"
        assert (await client.get("/v1/approvals", params={"status": "pending"})).json()["items"] == []
        late = await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "approve"})
        assert late.status_code == 409
