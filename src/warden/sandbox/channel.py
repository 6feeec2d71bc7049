"""The host end of the control protocol (docs/sandbox-protocol.md): one `GuestChannel` per
stream multiplexes concurrent requests by id and turns guest errors into `SandboxError`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from warden.sandbox.backend import ControlStream, SandboxError

log = logging.getLogger("warden.sandbox")

MAX_LINE = 16 * 2**20
"""The protocol's longest line; a longer one means the stream is out of step."""
DEFAULT_TIMEOUT = 60.0
"""Deadline of ops that carry no timeout of their own (files, contexts, hello)."""
TIMEOUT_MARGIN = 10.0
"""Beyond the op's own timeout: the guest's kill, restart and reply, over a slow bridge."""


class GuestChannel:
    """Requests to one guest supervisor over one `ControlStream`.

    A single reader task (owned here, cancelled by `aclose`) routes every message by id to the
    queue of the request that is waiting for it."""

    def __init__(
        self,
        stream: ControlStream,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        timeout_margin: float = TIMEOUT_MARGIN,
    ) -> None:
        self._stream = stream
        self._default_timeout = default_timeout
        self._timeout_margin = timeout_margin
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Queue[dict[str, Any] | SandboxError]] = {}
        self._failure: SandboxError | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(), name="guest-channel-reader")

    @property
    def closed(self) -> bool:
        return self._failure is not None

    async def request(self, op: str, **args: Any) -> AsyncIterator[dict[str, Any]]:
        """Send one request; yield its stdout/stderr chunks, then its final `result` message.

        A `type: error` answer raises `SandboxError` with the guest's code. Leaving the loop
        early (cancellation, break, an exception in the consumer) cancels the guest's work."""
        if self._failure is not None:
            raise self._failure
        request_id = next(self._ids)
        queue: asyncio.Queue[dict[str, Any] | SandboxError] = asyncio.Queue()
        self._pending[request_id] = queue
        timeout = args.get("timeout")
        limit = timeout if isinstance(timeout, int | float) and timeout > 0 else self._default_timeout
        # A deadline, not a timeout() block around the loop: a scope must never span a yield.
        deadline = asyncio.get_running_loop().time() + limit + self._timeout_margin
        finished = False
        try:
            self._send({"id": request_id, "op": op, **args})
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await queue.get()
                except TimeoutError:
                    raise SandboxError(
                        f"the sandbox did not answer {op} within {limit + self._timeout_margin:g}s",
                        code="timeout",
                    ) from None
                if isinstance(message, SandboxError):
                    finished = True
                    raise SandboxError(message.message, code=message.code)
                kind = message.get("type")
                if kind == "error":
                    finished = True
                    raise SandboxError(
                        str(message.get("message") or "the sandbox reported an error"),
                        code=str(message.get("code") or "internal"),
                    )
                if kind == "result":
                    finished = True
                yield message
                if finished:
                    return
        finally:
            self._pending.pop(request_id, None)
            if not finished and self._failure is None:
                # Fire and forget: its answer (to an id nobody waits for) is dropped by the reader.
                with contextlib.suppress(Exception):
                    self._send({"id": next(self._ids), "op": "cancel", "target": request_id})

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """One request's final result; any output chunks on the way are dropped."""
        final: dict[str, Any] = {}
        # request() always runs to its end here (or its finally runs as the error leaves it).
        async for message in self.request(op, **args):
            final = message
        return final

    async def aclose(self) -> None:
        """Stop the reader, close the stream; requests still waiting fail with channel_closed."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._fail(SandboxError("the channel was closed", code="channel_closed"))
        await self._stream.close()

    # -- internals -------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        if self._stream.writer.is_closing():
            self._fail(SandboxError("the stream to the sandbox is closed", code="channel_closed"))
            raise SandboxError("the stream to the sandbox is closed", code="channel_closed")
        # One write per message keeps lines whole; requests are small, and big writes (files)
        # are bounded by the protocol's line limit, so no drain is needed to bound memory.
        self._stream.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    async def _read_loop(self) -> None:
        reason = "the sandbox closed the stream"
        buffer = bytearray()
        scanned = 0
        try:
            # read() and our own line split, not readline(): the backend chose the reader's
            # limit, and a file_read answer can be far above asyncio's 64 KiB default.
            while data := await self._stream.reader.read(2**20):
                buffer += data
                while (end := buffer.find(b"\n", scanned)) >= 0:
                    self._dispatch(bytes(buffer[:end]))
                    del buffer[: end + 1]
                    scanned = 0
                scanned = len(buffer)
                if scanned > MAX_LINE + 2**20:
                    reason = "the sandbox sent a line longer than the protocol allows"
                    break
        except (ConnectionError, OSError) as exc:
            reason = f"the stream to the sandbox broke: {exc}"
        except asyncio.CancelledError:
            reason = "the channel was closed"
            raise
        finally:
            self._fail(SandboxError(reason, code="channel_closed"))

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("sandbox sent a line that is not JSON: %.200r", line)
            return
        if not isinstance(message, dict):
            log.warning("sandbox sent a line that is not an object: %.200r", line)
            return
        request_id = message.get("id")
        queue = self._pending.get(request_id) if isinstance(request_id, int) else None
        if queue is not None:
            queue.put_nowait(message)
        elif message.get("id") is None and message.get("type") == "error":
            log.warning("sandbox rejected a line: %s", message.get("message"))

    def _fail(self, error: SandboxError) -> None:
        if self._failure is None:
            self._failure = error
        for queue in self._pending.values():
            queue.put_nowait(error)
