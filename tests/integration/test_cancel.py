"""Cancel takes effect within a second, in the middle of a model stream or of a tool call."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from httpx_sse import aconnect_sse

from tests.conftest import MakeConfig, script, step
from warden.testing import FakeLLMServer, WardenHarness


async def _cancel_when(h: WardenHarness, task_id: str, trigger: str) -> tuple[float, list[str]]:
    """Follow the task; on the first `trigger` event cancel it; return seconds to task.cancelled."""
    types: list[str] = []
    cancelled_at = 0.0
    async with h.client() as client, asyncio.timeout(20):
        async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
            async for sse in source.aiter_sse():
                event = json.loads(sse.data)
                types.append(event["type"])
                if event["type"] == trigger and not cancelled_at:
                    cancelled_at = time.monotonic()
                    response = await client.post(f"/v1/tasks/{task_id}/cancel")
                    assert response.status_code == 202
                if event["type"] == "task.cancelled":
                    return time.monotonic() - cancelled_at, types
    raise AssertionError(f"no task.cancelled; saw {types}")


async def test_cancel_during_model_stream_stops_within_1s(
    make_config: MakeConfig, fake_llm: FakeLLMServer
) -> None:
    name = f"slow-stream-{uuid.uuid4().hex[:8]}"
    config = make_config(script=script(name, step("word " * 400, chunk_size=5, chunk_delay=0.05)))
    async with WardenHarness(config) as h, h.client() as client:
        task = (await client.post("/v1/tasks", json={"agent": "tester", "input": "talk"})).json()
        elapsed, types = await _cancel_when(h, task["id"], "model.delta")
        assert elapsed < 1.0
        assert "model.message" not in types
        await fake_llm.wait_for_streams(0, within=2)
        final = (await client.get(f"/v1/tasks/{task['id']}")).json()
        assert final["status"] == "cancelled"
        assert final["error"]["code"] == "cancelled"


async def test_cancel_during_tool_call_stops_within_1s(make_config: MakeConfig) -> None:
    name = f"slow-tool-{uuid.uuid4().hex[:8]}"
    config = make_config(script=script(name, step("Waiting.", ("wait", {"seconds": 60})), step("done")))
    async with WardenHarness(config) as h, h.client() as client:
        task = (await client.post("/v1/tasks", json={"agent": "tester", "input": "wait"})).json()
        elapsed, types = await _cancel_when(h, task["id"], "tool.started")
        assert elapsed < 1.0
        assert "tool.finished" not in types
        assert (await client.get(f"/v1/tasks/{task['id']}")).json()["status"] == "cancelled"


async def test_cancel_of_a_queued_task_is_immediate(make_config: MakeConfig) -> None:
    config = make_config(script=script(f"never-{uuid.uuid4().hex[:8]}", step("never")))
    async with WardenHarness(config, workers=0) as h, h.client() as client:
        task = (await client.post("/v1/tasks", json={"agent": "tester", "input": "x"})).json()
        response = await client.post(f"/v1/tasks/{task['id']}/cancel")
        assert response.json()["status"] == "cancelled"
