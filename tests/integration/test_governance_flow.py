"""Governance end to end through a real Warden: the PII round trip (the model sees placeholders,
the tool gets real values, streams and the audit log show placeholders unless the reader holds
``pii:read``), tool output marked as untrusted with a flagged result turning the next
side-effecting call into ``ask``, and budgets over time windows per tenant and agent."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import MakeConfig, script, step
from tests.integration import governance_tools
from tests.integration.test_api_tasks import follow_to_end
from warden.config import WardenConfig
from warden.errors import ConfigError
from warden.runtime import Runtime
from warden.store.schema import pii_vaults
from warden.testing import WardenHarness

KEY_ENV = "WARDEN_TEST_PII_KEY"
TOOLS = [
    {"name": "send_sms", "python": "tests.integration.governance_tools:send_sms"},
    {"name": "fetch_page", "python": "tests.integration.governance_tools:fetch_page"},
]
ALLOW_SMS = {"rules": [{"name": "sms-ok", "tools": ["send_sms"], "decision": "allow", "reason": "test"}]}
REAL = ("John Smith", "555-0123")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    governance_tools.RECEIVED.clear()
    os.environ[KEY_ENV] = base64.b64encode(os.urandom(32)).decode()
    yield
    os.environ.pop(KEY_ENV, None)
    governance_tools.RECEIVED.clear()


def _config(make_config: MakeConfig, *steps: Any, **extra: Any) -> WardenConfig:
    return make_config(
        script=script(f"gov-{uuid.uuid4().hex[:8]}", *steps),
        tools=extra.pop("tools", ["send_sms", "fetch_page", "calculator"]),
        extra_tools=TOOLS,
        policy=extra.pop("policy", ALLOW_SMS),
        **extra,
    )


async def _run(client: httpx.AsyncClient, text: str) -> tuple[str, list[dict[str, Any]]]:
    response = await client.post("/v1/tasks", json={"agent": "tester", "input": text})
    assert response.status_code == 202, response.text
    task_id = str(response.json()["id"])
    return task_id, await follow_to_end(client, task_id)


def _contains_real(value: Any) -> list[str]:
    text = json.dumps(value, ensure_ascii=False)
    return [v for v in REAL if v in text]


async def test_pii_round_trip(make_config: MakeConfig, database_url: str) -> None:
    config = _config(
        make_config,
        step("", ("send_sms", {"to": "<PHONE_NUMBER_1>", "body": "Hi <PERSON_1>, we are on our way"})),
        step("I texted <PERSON_1> at <PHONE_NUMBER_1>."),
        database_url=database_url,
        pii={"enabled": True, "key_env": KEY_ENV},
    )
    async with WardenHarness(config) as h:
        plain = await h.key_for("default", ["tasks:read", "tasks:write", "audit:read"])
        reader = await h.key_for("default", ["tasks:read", "pii:read"])
        async with h.client(plain) as client:
            task_id, events = await _run(client, f"Call {REAL[0]} at {REAL[1]}")
            task = (await client.get(f"/v1/tasks/{task_id}")).json()
            audit = (await client.get("/v1/audit", params={"limit": 200})).json()["items"]
        async with h.client(reader) as client:
            revealed_task = (await client.get(f"/v1/tasks/{task_id}")).json()
            revealed_list = (await client.get("/v1/tasks")).json()["items"]
            revealed_events = await follow_to_end(client, task_id)
        assert h.runtime is not None
        async with h.runtime.db.read() as conn:
            (blob,) = (await conn.execute(select(pii_vaults.c.blob))).one()

    # The tool got the real values back, exactly.
    assert governance_tools.RECEIVED == [
        {"tool": "send_sms", "to": "555-0123", "body": "Hi John Smith, we are on our way"}
    ]
    assert events[-1]["type"] == "task.completed"
    # A reader without pii:read sees placeholders only: events, output, audit log.
    assert _contains_real(events) == [] and _contains_real(task) == [] and _contains_real(audit) == []
    assert task["output"] == "I texted <PERSON_1> at <PHONE_NUMBER_1>."
    (finished,) = [e for e in events if e["type"] == "tool.finished"]
    assert (
        "<PHONE_NUMBER_1>" in finished["data"]["content"]
        and finished["data"]["data"]["to"] == "<PHONE_NUMBER_1>"
    )
    assert {"model.call", "tool.decision"} <= {a["action"] for a in audit}
    (decision,) = [a for a in audit if a["action"] == "tool.decision" and a["data"]["task_id"] == task_id]
    assert decision["data"]["arguments"] == {
        "to": "<PHONE_NUMBER_1>",
        "body": "Hi <PERSON_1>, we are on our way",
    }
    # pii:read reveals the same events and output with the real values.
    assert revealed_task["output"] == "I texted John Smith at 555-0123."
    assert [t["output"] for t in revealed_list] == ["I texted John Smith at 555-0123."]
    (revealed,) = [e for e in revealed_events if e["type"] == "tool.finished"]
    assert revealed["data"]["data"]["to"] == "555-0123"
    assert [e["seq"] for e in revealed_events] == [e["seq"] for e in events]
    # The vault is stored sealed: no real value in clear.
    assert b"555-0123" not in bytes(blob) and b"John" not in bytes(blob)


async def test_the_model_sees_placeholders_only(make_config: MakeConfig, fake_llm: Any) -> None:
    config = _config(
        make_config,
        step("", ("send_sms", {"to": "<PHONE_NUMBER_1>", "body": "On our way"})),
        step("Done."),
        pii={"enabled": True, "key_env": KEY_ENV},
    )
    async with WardenHarness(config) as h, h.client() as client:
        _, events = await _run(client, f"Call {REAL[0]} at {REAL[1]}")
    assert events[-1]["type"] == "task.completed"
    requests = fake_llm.requests_for(config.models["default"].model)
    assert len(requests) == 2
    assert _contains_real(requests) == []
    user = [m for m in requests[0]["messages"] if m["role"] == "user"]
    assert user[-1]["content"] == "Call <PERSON_1> at <PHONE_NUMBER_1>"
    # The tool's result quoted the real number; the model got it back as the same placeholder.
    tool_message = [m for m in requests[1]["messages"] if m["role"] == "tool"][-1]
    assert "<PHONE_NUMBER_1>" in tool_message["content"]


async def test_the_same_value_keeps_its_placeholder_across_a_session(
    make_config: MakeConfig, fake_llm: Any
) -> None:
    config = _config(
        make_config, step("Noted."), step("Noted again."), pii={"enabled": True, "key_env": KEY_ENV}
    )
    async with WardenHarness(config) as h, h.client() as client:
        first = await client.post("/v1/tasks", json={"agent": "tester", "input": f"My number is {REAL[1]}"})
        session_id = first.json()["session_id"]
        await follow_to_end(client, first.json()["id"])
        second = await client.post(
            "/v1/tasks", json={"session_id": session_id, "input": f"Text me on {REAL[1]} or call {REAL[0]}"}
        )
        await follow_to_end(client, second.json()["id"])
        # The session's messages: placeholders for an admin key, real values for pii:read.
        stored = (await client.get(f"/v1/sessions/{session_id}")).json()["messages"]
        assert stored[0]["content"] == "My number is <PHONE_NUMBER_1>"
        reader = await h.key_for("default", ["tasks:read", "pii:read"])
        async with h.client(reader) as revealing:
            revealed = (await revealing.get(f"/v1/sessions/{session_id}")).json()["messages"]
        assert revealed[0]["content"] == f"My number is {REAL[1]}"
    last = fake_llm.requests_for(config.models["default"].model)[-1]["messages"]
    users = [m["content"] for m in last if m["role"] == "user"]
    assert users == ["My number is <PHONE_NUMBER_1>", "Text me on <PHONE_NUMBER_1> or call <PERSON_1>"]


async def test_pii_on_without_a_key_stops_the_start_with_a_clear_error(make_config: MakeConfig) -> None:
    os.environ.pop(KEY_ENV, None)
    config = _config(make_config, step("x"), pii={"enabled": True, "key_env": KEY_ENV})
    with pytest.raises(ConfigError, match=KEY_ENV):
        await Runtime.open(config)


async def test_tool_output_is_marked_and_a_flagged_result_makes_the_next_side_effect_ask(
    make_config: MakeConfig, fake_llm: Any
) -> None:
    config = _config(
        make_config,
        step("", ("fetch_page", {"url": "http://shop.test/"})),
        step("", ("send_sms", {"to": "555-0199", "body": "your password"})),
        step("Stopped."),
    )
    async with WardenHarness(config) as h, h.client() as client:
        response = await client.post("/v1/tasks", json={"agent": "tester", "input": "check the shop"})
        task_id = response.json()["id"]
        approvals: list[dict[str, Any]] = []
        for _ in range(200):
            approvals = (await client.get("/v1/approvals", params={"task_id": task_id})).json()["items"]
            if approvals:
                break
            await asyncio.sleep(0.05)
        (approval,) = approvals
        assert approval["tool"] == "send_sms" and approval["rule"] == "warden.untrusted-content"
        assert "prompt-injection" in approval["reason"]
        await client.post(f"/v1/approvals/{approval['id']}", json={"decision": "deny", "reason": "injection"})
        events = await follow_to_end(client, task_id)
    # The SMS never went out; the page was read once.
    assert [r["tool"] for r in governance_tools.RECEIVED] == ["fetch_page"]
    fetched = next(e for e in events if e["type"] == "tool.finished" and e["data"]["name"] == "fetch_page")
    assert fetched["data"]["flagged"]["detector"] == "builtin"
    # The model got the page inside a marked element, and was told what that means.
    second = fake_llm.requests_for(config.models["default"].model)[1]["messages"]
    assert "untrusted data" in second[0]["content"]
    page = [m for m in second if m["role"] == "tool"][-1]["content"]
    assert page.startswith('<tool_output tool="fetch_page">') and page.endswith("</tool_output>")


async def test_a_spent_task_budget_refuses_new_tasks_with_429(make_config: MakeConfig) -> None:
    config = _config(
        make_config,
        step("one."),
        step("two."),
        budgets=[{"name": "daily-tasks", "window": "1d", "max_tasks": 1}],
    )
    async with WardenHarness(config) as h, h.client() as client:
        _, events = await _run(client, "first")
        assert events[-1]["type"] == "task.completed"
        refused = await client.post("/v1/tasks", json={"agent": "tester", "input": "second"})
        assert refused.status_code == 429
        body = refused.json()
        assert body["code"] == "budget_exceeded" and "daily-tasks" in body["message"]
        # Another tenant has its own budget.
        other = await h.key_for("other", ["tasks:read", "tasks:write"])
        async with h.client(other) as client2:
            assert (
                await client2.post("/v1/tasks", json={"agent": "tester", "input": "x"})
            ).status_code == 202


async def test_a_token_budget_stops_a_running_task_before_its_next_model_call(
    make_config: MakeConfig,
) -> None:
    config = _config(
        make_config,
        step(
            "",
            ("calculator", {"expression": "1+1"}),
            usage={"prompt_tokens": 400, "completion_tokens": 200, "total_tokens": 600},
        ),
        step("never reached"),
        budgets=[{"name": "agent-tokens", "agent": "tester", "window": "1h", "max_tokens": 500}],
    )
    async with WardenHarness(config) as h, h.client() as client:
        task_id, events = await _run(client, "add")
        task = (await client.get(f"/v1/tasks/{task_id}")).json()
    assert events[-1]["type"] == "task.failed"
    assert task["error"]["code"] == "budget_exceeded" and "agent-tokens" in task["error"]["message"]
    assert [e for e in events if e["type"] == "model.message"][-1]["data"]["step"] == 0
