"""The lean SSE response, driven as a server drives it: frames out, keep-alives on a quiet
stream, and a client that leaves stops the stream's producer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from warden.api._sse import PING, EventStreamResponse, OpenStreams, sse_frame
from warden.events.types import Event, EventType

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "headers": []}


class Client:
    """Records what the response sends; ``leave()`` makes ``receive`` report a disconnect."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self._gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self._gone.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def test_frames_are_sent_in_order_and_the_body_ends_with_the_stream() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield sse_frame("one", event="a", id="1")
        yield sse_frame("two\nlines", event="b", id="2")

    client = Client()
    await asyncio.wait_for(EventStreamResponse(frames())(SCOPE, client.receive, client.send), 5)

    start = client.sent[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert b"content-length" not in headers
    assert headers[b"cache-control"] == b"no-store"
    assert client.body == b"id: 1\nevent: a\ndata: one\n\nid: 2\nevent: b\ndata: two\ndata: lines\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_quiet_stream_gets_keepalive_comments() -> None:
    release = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        await release.wait()
        yield sse_frame("late")

    client = Client()
    response = asyncio.create_task(
        EventStreamResponse(frames(), ping=0.05)(SCOPE, client.receive, client.send)
    )
    await asyncio.sleep(0.3)
    release.set()
    await asyncio.wait_for(response, 5)
    pings = client.body.count(PING)
    assert 2 <= pings <= 7
    assert client.body.endswith(b"data: late\n\n")


async def test_a_client_that_leaves_stops_the_producer() -> None:
    closed = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield sse_frame("first")
            await asyncio.Event().wait()  # no more events for a long time
            yield sse_frame("never")
        finally:
            closed.set()

    client = Client()
    response = asyncio.create_task(EventStreamResponse(frames())(SCOPE, client.receive, client.send))
    await asyncio.sleep(0.05)
    client.leave()
    await asyncio.wait_for(response, 5)
    assert closed.is_set()
    assert client.body == b"data: first\n\n"


async def test_a_failing_producer_surfaces_its_error() -> None:
    async def frames() -> AsyncIterator[bytes]:
        yield sse_frame("ok")
        raise RuntimeError("the log is unreadable")

    client = Client()
    with pytest.raises(RuntimeError, match="unreadable"):
        await asyncio.wait_for(EventStreamResponse(frames())(SCOPE, client.receive, client.send), 5)


def test_an_event_frame_is_its_wire_json_with_seq_and_type() -> None:
    event = Event("task_1", 7, 1.5, EventType.MODEL_DELTA, {"text": "a\nb"})
    assert event.sse_frame == f"id: 7\nevent: model.delta\ndata: {event.wire_json}\n\n".encode()
    assert event.sse_frame.count(b"\n") == 4  # the text's line break stays escaped in the JSON


def test_field_values_never_break_a_frame() -> None:
    assert sse_frame("x", event="a\nid: 9", id="1\r2") == b"id: 1 2\nevent: a id: 9\ndata: x\n\n"


async def test_closing_the_open_streams_ends_each_body_cleanly() -> None:
    """A shutting-down server ends its streams (uvicorn would wait for them for ever); the
    client sees the body end and resumes elsewhere. Streams opened after that end at once."""
    closed = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield sse_frame("first", id="1")
            await asyncio.Event().wait()
            yield sse_frame("never")
        finally:
            closed.set()

    async def nothing() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    streams = OpenStreams()
    client = Client()
    response = asyncio.create_task(
        EventStreamResponse(frames(), streams=streams)(SCOPE, client.receive, client.send)
    )
    await asyncio.sleep(0.05)
    assert len(streams) == 1
    streams.close()
    await asyncio.wait_for(response, 5)
    assert closed.is_set() and len(streams) == 0
    assert client.body == b"id: 1\ndata: first\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}

    late = Client()
    await asyncio.wait_for(EventStreamResponse(nothing(), streams=streams)(SCOPE, late.receive, late.send), 5)
    assert late.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
