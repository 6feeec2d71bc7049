"""Live task events over SSE and WebSocket: frame shape, order, types, resumption, fan-out."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import MakeConfig, script, step
from warden.testing.harness import WardenHarness

DEADLINE = 20.0
TERMINAL = {"task.completed", "task.failed", "task.cancelled"}
LONG_TEXT = "Streaming slowly, two characters at a time, so that the task lasts a while."


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def slow_script(prefix: str) -> Any:
    """One model turn that streams for about 1.5 s (38 deltas, 40 ms apart)."""
    return script(unique(prefix), step(LONG_TEXT, chunk_size=2, chunk_delay=0.04))


async def submit(client: httpx.AsyncClient, text: str = "go") -> str:
    response = await client.post("/v1/tasks", json={"agent": "tester", "input": text})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


async def sse_frames(
    client: httpx.AsyncClient,
    task_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    limit: int | None = None,
) -> list[ServerSentEvent]:
    """SSE frames of the task until the server closes the stream (or ``limit`` frames were read,
    after which this client disconnects)."""
    frames: list[ServerSentEvent] = []
    async with asyncio.timeout(DEADLINE):
        async with aconnect_sse(
            client, "GET", f"/v1/tasks/{task_id}/events", headers=headers or {}, params=params or {}
        ) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for sse in source.aiter_sse():
                frames.append(sse)
                if limit is not None and len(frames) >= limit:
                    break
    return frames


async def sse_events(client: httpx.AsyncClient, task_id: str, **kwargs: Any) -> list[dict[str, Any]]:
    return [json.loads(f.data) for f in await sse_frames(client, task_id, **kwargs)]


def ws_url(h: WardenHarness, task_id: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{h.port}/v1/tasks/{task_id}/stream{query}"


async def ws_messages(
    url: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Every text frame until the server closes; returns them and the close code."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        async with connect(url, additional_headers=headers or {}) as ws:
            try:
                async for raw in ws:
                    messages.append(json.loads(raw))
            except ConnectionClosed:
                pass
            await ws.wait_closed()
            return messages, ws.close_code


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


# --- SSE ------------------------------------------------------------------------------------


async def test_sse_frames_carry_seq_type_and_the_event_json_from_queued_to_completed(
    make_config: MakeConfig,
) -> None:
    config = make_config(script=script(unique("sse"), step("Hello there.")))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await submit(client)
        frames = await sse_frames(client, task_id)

    assert frames
    events = []
    for frame in frames:
        data = json.loads(frame.data)
        assert set(data) == {"task_id", "seq", "ts", "type", "data"}
        assert data["task_id"] == task_id
        assert frame.id == str(data["seq"])
        assert frame.event == data["type"]
        assert isinstance(data["ts"], float)
        assert isinstance(data["data"], dict)
        events.append(data)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert events[0]["type"] == "task.queued"
    assert events[-1]["type"] == "task.completed"
    assert events[-1]["data"]["output"] == "Hello there."
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


async def test_sse_stream_of_a_finished_task_replays_the_log_and_closes(make_config: MakeConfig) -> None:
    config = make_config(script=script(unique("replay"), step("Done.")))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await submit(client)
        live = await sse_events(client, task_id)
        replayed = await sse_events(client, task_id)
        assert replayed == live
        assert (await client.get(f"/v1/tasks/{task_id}")).json()["last_seq"] == live[-1]["seq"]


async def test_tool_using_task_emits_every_design_event_type(make_config: MakeConfig) -> None:
    config = make_config(
        script=script(
            unique("tools"),
            step("Let me compute.", ("calculator", {"expression": "6*7"})),
            step("The result is {{last_tool_result}}."),
        )
    )
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await submit(client, "What is 6*7?")
        events = await sse_events(client, task_id)

    types = [e["type"] for e in events]
    for expected in (
        "task.queued",
        "task.started",
        "model.delta",
        "model.message",
        "tool.requested",
        "tool.started",
        "tool.finished",
        "task.checkpoint",
        "task.completed",
    ):
        assert expected in types, f"{expected} missing from {types}"
    assert types.index("tool.requested") < types.index("tool.started") < types.index("tool.finished")
    assert types.index("tool.finished") < types.index("task.checkpoint") < types.index("task.completed")
    requested = next(e for e in events if e["type"] == "tool.requested")["data"]
    finished = next(e for e in events if e["type"] == "tool.finished")["data"]
    assert requested["name"] == finished["name"] == "calculator"
    assert requested["call_id"] == finished["call_id"]
    assert finished["content"] == "42"
    assert finished["is_error"] is False
    assert events[-1]["data"]["output"] == "The result is 42."


async def test_streamed_deltas_concatenate_to_the_model_message(make_config: MakeConfig) -> None:
    text = "One, two, three, four, five, six, seven, eight, nine, ten."
    config = make_config(script=script(unique("deltas"), step(text, chunk_size=3, chunk_delay=0.03)))
    async with WardenHarness(config) as h, h.client() as client:
        events = await sse_events(client, await submit(client))

    deltas = [e for e in events if e["type"] == "model.delta"]
    message = next(e for e in events if e["type"] == "model.message")
    assert len(deltas) >= 3, "20 chunks 30 ms apart span several 50 ms flush intervals"
    assert all(d["data"]["step"] == message["data"]["step"] for d in deltas)
    assert all(d["seq"] < message["seq"] for d in deltas)
    assert "".join(d["data"]["text"] for d in deltas) == message["data"]["content"] == text


@pytest.mark.parametrize("how", ["last-event-id", "after"])
async def test_reconnecting_mid_task_resumes_exactly_after_the_last_seen_event(
    make_config: MakeConfig, how: str
) -> None:
    config = make_config(script=slow_script("resume"))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await submit(client)
        first = await sse_events(client, task_id, limit=4)
        assert seqs(first) == [1, 2, 3, 4]
        # The reconnect below happens while the task still runs, so the rest comes live.
        assert (await client.get(f"/v1/tasks/{task_id}")).json()["status"] == "running"
        k = first[-1]["seq"]
        if how == "last-event-id":
            rest = await sse_events(client, task_id, headers={"Last-Event-ID": str(k)})
        else:
            rest = await sse_events(client, task_id, params={"after": k})
        full = await sse_events(client, task_id)

    assert rest, "nothing after the resume point"
    assert seqs(rest) == list(range(k + 1, k + 1 + len(rest)))
    assert rest[-1]["type"] == "task.completed"
    assert first + rest == full


async def test_last_event_id_that_is_not_an_integer_is_422(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        task_id = await submit(client)
        response = await client.get(f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "seven"})
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "invalid_last_event_id"
        assert body["message"]


async def test_two_concurrent_sse_subscribers_see_identical_sequences(make_config: MakeConfig) -> None:
    config = make_config(script=slow_script("fanout"))
    async with WardenHarness(config) as h, h.client() as one, h.client() as two:
        task_id = await submit(one)
        a, b = await asyncio.gather(sse_events(one, task_id), sse_events(two, task_id))

    assert a == b
    assert seqs(a) == list(range(1, len(a) + 1))
    assert a[-1]["type"] == "task.completed"
    assert sum(1 for e in a if e["type"] == "model.delta") >= 3


# --- WebSocket ------------------------------------------------------------------------------


async def test_websocket_sends_the_same_json_as_sse_and_closes_1000(make_config: MakeConfig) -> None:
    config = make_config(script=slow_script("ws"))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await submit(client)
        messages, code = await ws_messages(
            ws_url(h, task_id), headers={"Authorization": f"Bearer {h.admin_key}"}
        )
        over_sse = await sse_events(client, task_id)

    assert code == 1000
    assert messages == over_sse
    assert seqs(messages) == list(range(1, len(messages) + 1))
    assert messages[-1]["type"] == "task.completed"


async def test_websocket_accepts_the_key_in_the_query_and_resumes_after(make_config: MakeConfig) -> None:
    config = make_config(script=script(unique("ws-query"), step("Short answer.")))
    async with WardenHarness(config) as h, h.client() as client:
        task_id = await submit(client)
        everything = await sse_events(client, task_id)
        messages, code = await ws_messages(ws_url(h, task_id, f"?api_key={h.admin_key}&after=2"))

    assert code == 1000
    assert messages == everything[2:]


async def test_websocket_with_a_bad_key_gets_an_error_frame_and_close_4401(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        task_id = await submit(client)
        messages, code = await ws_messages(
            ws_url(h, task_id), headers={"Authorization": "Bearer wk_000000000000_notarealsecret"}
        )

    assert code == 4401
    assert len(messages) == 1
    assert messages[0]["error"]["code"] == "invalid_api_key"
    assert messages[0]["error"]["message"]


async def test_websocket_for_another_tenants_task_closes_4404(make_config: MakeConfig) -> None:
    async with WardenHarness(make_config(), workers=0) as h, h.client() as client:
        task_id = await submit(client)
        other = await h.key_for("other-tenant")
        messages, code = await ws_messages(ws_url(h, task_id, f"?api_key={other}"))

    assert code == 4404
    assert [m["error"]["code"] for m in messages] == ["task_not_found"]


async def test_a_server_shutting_down_ends_open_streams_cleanly_instead_of_waiting_for_them(
    make_config: MakeConfig,
) -> None:
    """uvicorn stops by waiting for every response to finish, and a task's stream lasts as long
    as the task: the server ends its open streams first, so it stops at once and each client
    sees its stream end (and would resume elsewhere with Last-Event-ID)."""
    config = make_config(
        script=script(unique("shutdown"), step(LONG_TEXT * 4, chunk_size=2, chunk_delay=0.2))
    )
    harness = WardenHarness(config)
    await harness.__aenter__()
    frames: list[ServerSentEvent] = []
    streaming = asyncio.Event()
    stopped = False
    try:
        async with harness.client() as client:
            task_id = await submit(client)

            async def read() -> None:
                async with aconnect_sse(client, "GET", f"/v1/tasks/{task_id}/events") as source:
                    async for sse in source.aiter_sse():
                        frames.append(sse)
                        if sse.event == "model.delta":
                            streaming.set()

            reading = asyncio.create_task(read())
            await asyncio.wait_for(streaming.wait(), DEADLINE)
            started = asyncio.get_running_loop().time()
            await harness.__aexit__(None, None, None)
            stopped = True
            stopped_in = asyncio.get_running_loop().time() - started
            await asyncio.wait_for(reading, 5)  # the body ended: no error, no hang
    finally:
        if not stopped:
            await harness.__aexit__(None, None, None)

    assert stopped_in < 10, f"the server took {stopped_in:.1f} s to stop"
    seqs = [int(f.id) for f in frames]
    assert seqs == list(range(1, len(seqs) + 1))
    assert frames[-1].event not in TERMINAL  # the task had not ended: the server ended the stream
