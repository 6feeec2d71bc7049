"""The egress tunnel: many TCP connections multiplexed over one byte stream between the
sandbox and the host, with per-connection flow control. The guest opens channels (one per
connection to its local proxy port); the host decides what each may reach.

Standard library only: the supervisor inside the sandbox imports this file, and the host
imports the same file, so both ends speak exactly one implementation.

A frame is ``>IBI`` (channel id, kind, payload length) and the payload. Each side may have at
most ``WINDOW`` unacknowledged payload bytes in flight per channel; the receiver returns credit
with ``WINDOW`` frames as it consumes. A peer that breaks the protocol loses the whole tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable

HEADER = struct.Struct(">IBI")
OPEN, DATA, EOF, CLOSE, CREDIT, READY = 1, 2, 3, 4, 5, 6
MAX_PAYLOAD = 64 * 1024
WINDOW = 256 * 1024
MAX_CHANNELS = 256
"""Concurrent connections per tunnel; more are refused (the sandbox sees a closed socket)."""


class TunnelError(Exception):
    """The peer broke the protocol; the tunnel is closed."""


class Channel:
    """One connection through the tunnel: read chunks, write with back-pressure."""

    def __init__(self, tunnel: Tunnel, channel_id: int) -> None:
        self.id = channel_id
        self._tunnel = tunnel
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffered = 0
        self._consumed = 0
        self._credit = WINDOW
        self._credit_event = asyncio.Event()
        self._eof_received = False
        self._eof_sent = False
        self.closed = False

    async def read(self) -> bytes:
        """The next chunk; ``b""`` once the peer finished sending or the channel closed."""
        if self.closed and self._inbox.empty():
            return b""
        chunk = await self._inbox.get()
        if chunk:
            self._buffered -= len(chunk)
            self._consumed += len(chunk)
            if self._consumed >= WINDOW // 2 and not self.closed:
                self._tunnel.send(self.id, CREDIT, struct.pack(">I", self._consumed))
                self._consumed = 0
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            while self._credit <= 0 and not self.closed:
                self._credit_event.clear()
                await self._credit_event.wait()
            if self.closed:
                raise ConnectionResetError("the tunnel channel is closed")
            size = min(len(view), MAX_PAYLOAD, self._credit)
            self._credit -= size
            self._tunnel.send(self.id, DATA, bytes(view[:size]))
            view = view[size:]
            await self._tunnel.drain()

    def write_eof(self) -> None:
        if not self._eof_sent and not self.closed:
            self._eof_sent = True
            self._tunnel.send(self.id, EOF)

    def close(self) -> None:
        """Abort both directions (idempotent)."""
        if not self.closed:
            self._tunnel.send(self.id, CLOSE)
            self._tunnel.forget(self.id)
            self._closed_by_peer()

    # -- called by the tunnel -------------------------------------------------------------

    def _received(self, kind: int, payload: bytes) -> None:
        if kind == DATA:
            if self._eof_received:
                raise TunnelError(f"data after end of stream on channel {self.id}")
            self._buffered += len(payload)
            if self._buffered > WINDOW:
                raise TunnelError(f"channel {self.id} overran its window")
            self._inbox.put_nowait(payload)
        elif kind == EOF:
            if not self._eof_received:
                self._eof_received = True
                self._inbox.put_nowait(b"")
        elif kind == CREDIT:
            if len(payload) != 4:
                raise TunnelError("a credit frame needs a 4-byte count")
            self._credit = min(WINDOW, self._credit + struct.unpack(">I", payload)[0])
            self._credit_event.set()
        elif kind == CLOSE:
            self._tunnel.forget(self.id)
            self._closed_by_peer()
        else:
            raise TunnelError(f"unexpected frame kind {kind} on channel {self.id}")

    def _closed_by_peer(self) -> None:
        self.closed = True
        self._credit_event.set()
        self._inbox.put_nowait(b"")


class Tunnel:
    """One end of the multiplexed stream. ``accept`` (host side) runs for every channel the
    peer opens, in a task the tunnel owns; the guest side opens channels with `open`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        accept: Callable[[Channel], Awaitable[None]] | None = None,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._accept = accept
        self._max_channels = max_channels
        self._channels: dict[int, Channel] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._next_id = 1
        self.closed = False
        self.ready = asyncio.Event()
        """Set when the peer said it is serving (the guest sends READY once it listens)."""

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def open(self) -> Channel:
        if self.closed:
            raise ConnectionResetError("the tunnel is closed")
        if len(self._channels) >= self._max_channels:
            raise ConnectionRefusedError("too many connections through the tunnel")
        channel = Channel(self, self._next_id)
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        self._channels[channel.id] = channel
        self.send(channel.id, OPEN)
        return channel

    async def run(self) -> None:
        """Read frames until the stream ends or the peer misbehaves; then close everything."""
        try:
            while True:
                header = await self._reader.readexactly(HEADER.size)
                channel_id, kind, length = HEADER.unpack(header)
                if length > MAX_PAYLOAD:
                    raise TunnelError(f"a frame of {length} bytes exceeds {MAX_PAYLOAD}")
                payload = await self._reader.readexactly(length) if length else b""
                self._dispatch(channel_id, kind, payload)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            await self.aclose()

    def _dispatch(self, channel_id: int, kind: int, payload: bytes) -> None:
        if kind == READY and channel_id == 0:
            self.ready.set()
            return
        if kind == OPEN:
            if self._accept is None or channel_id in self._channels or channel_id == 0:
                raise TunnelError(f"unexpected open of channel {channel_id}")
            if len(self._channels) >= self._max_channels:
                self.send(channel_id, CLOSE)
                return
            channel = Channel(self, channel_id)
            self._channels[channel_id] = channel
            task = asyncio.get_running_loop().create_task(self._serve(channel))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            return
        known = self._channels.get(channel_id)
        if known is not None:
            known._received(kind, payload)
        # Frames for a channel we already closed are in flight by design: drop them.

    async def _serve(self, channel: Channel) -> None:
        assert self._accept is not None
        try:
            await self._accept(channel)
        finally:
            channel.close()

    def send(self, channel_id: int, kind: int, payload: bytes = b"") -> None:
        if self.closed or self._writer.is_closing():
            return
        self._writer.write(HEADER.pack(channel_id, kind, len(payload)) + payload)

    async def drain(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def forget(self, channel_id: int) -> None:
        self._channels.pop(channel_id, None)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for channel in list(self._channels.values()):
            channel._closed_by_peer()
        self._channels.clear()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            self._writer.close()


async def splice(channel: Channel, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy both ways between a channel and a socket until both directions end."""

    async def outbound() -> None:
        try:
            while data := await reader.read(MAX_PAYLOAD):
                await channel.write(data)
            channel.write_eof()
        except (ConnectionError, OSError):
            channel.close()

    async def inbound() -> None:
        try:
            while data := await channel.read():
                writer.write(data)
                await writer.drain()
            if channel.closed:
                writer.close()  # an abort: end the socket too, so outbound's read returns
            elif writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            channel.close()
            writer.close()

    tasks = [asyncio.ensure_future(outbound()), asyncio.ensure_future(inbound())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            writer.close()
