"""A lean ``text/event-stream`` response for streams with many subscribers.

One task's event goes to every subscriber of it, so the per-frame cost on the server is what
limits fan-out. Here a frame is bytes built once per event (``Event.sse_frame``) and written
with one ASGI ``send``; a connection costs two coroutines: the pump, which writes frames, and
the response's own task, which waits for the client to go away and writes a comment as a
keep-alive when the stream has been quiet. (sse-starlette, used before, built each frame per
subscriber and ran a task group of four tasks and a memory stream per connection; at 1,000
subscribers its objects alone made the collector's full passes take 200 ms.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from warden.events.sse import sse_frame

PING = b": ping\n\n"


def json_frame(value: Any, *, event: str | None = None) -> bytes:
    return sse_frame(json.dumps(value, separators=(",", ":")), event=event)


class OpenStreams:
    """The event streams a server has open, so that its shutdown can end them: uvicorn waits
    for every response to finish before it stops, and a task's stream may run for hours. Ended
    streams close cleanly; clients resume elsewhere with ``Last-Event-ID``."""

    def __init__(self) -> None:
        self._pumps: set[asyncio.Task[None]] = set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._pumps)

    def add(self, pump: asyncio.Task[None]) -> None:
        if self.closing:
            pump.cancel()
        self._pumps.add(pump)

    def discard(self, pump: asyncio.Task[None]) -> None:
        self._pumps.discard(pump)

    def close(self) -> None:
        """End every open stream now and any opened from here on."""
        self.closing = True
        for pump in list(self._pumps):
            pump.cancel()


class EventStreamResponse(Response):
    """Streams pre-encoded SSE frames; ends when the frames end, the client disconnects or
    ``streams`` is closed (the server is shutting down)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes],
        *,
        streams: OpenStreams | None = None,
        ping: float = 15.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # No super().__init__: it would set a body and with it ``content-length: 0``.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no", **(headers or {})})
        self._frames = frames
        self._streams = streams
        self._ping = ping
        self._sending = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        pump = asyncio.create_task(self._pump(send), name="sse-pump")
        if self._streams is not None:
            self._streams.add(pump)
        disconnected = False
        try:
            disconnected = await self._watch(receive, send, pump)
        finally:
            if self._streams is not None:
                self._streams.discard(pump)
            if not pump.done():
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            aclose = getattr(self._frames, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        if pump.cancelled():
            if not disconnected:  # closed by the server: end the body so the client resumes
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif pump.exception() is not None:
            raise pump.exception()  # type: ignore[misc]

    async def _pump(self, send: Send) -> None:
        async for frame in self._frames:
            async with self._sending:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        async with self._sending:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch(self, receive: Receive, send: Send, pump: asyncio.Task[None]) -> bool:
        """Until the pump ends: notice the client leaving (returns True), and keep a quiet stream
        alive."""
        message: asyncio.Future[Any] = asyncio.ensure_future(receive())
        try:
            while not pump.done():
                done, _ = await asyncio.wait(
                    {pump, message}, timeout=self._ping, return_when=asyncio.FIRST_COMPLETED
                )
                if message in done:
                    if message.result()["type"] == "http.disconnect":
                        return True
                    message = asyncio.ensure_future(receive())  # a request body chunk: ignore it
                elif not done and not self._sending.locked():
                    async with self._sending:
                        await send({"type": "http.response.body", "body": PING, "more_body": True})
            return False
        finally:
            if not message.done():
                message.cancel()
