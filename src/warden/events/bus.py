"""Live fan-out of events to subscribers, work wake-ups and cancel signals.

`LocalEventBus` delivers in-process at once and, for tasks run by another process, polls the
log once per task (not once per subscriber) so streams stay correct without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from warden.events.types import Event

LogReader = Callable[[str, int], Awaitable[list[Event]]]
"""Reads a task's events after a seq; the bus uses it to catch events written elsewhere."""


class Subscription:
    """The live events of one task for one subscriber, in order and without repeats."""

    def __init__(self, task_id: str, after: int, buffer: int) -> None:
        self.task_id = task_id
        self.last_seq = after
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=buffer)
        """Events, and None when a `get` has waited its timeout out."""
        self.lagged = False
        """Set when the subscriber fell behind and events were dropped; re-read from the log."""
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True

    async def get(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one."""
        if not self._queue.empty():  # no deadline to move when one is waiting already
            return self._queue.get_nowait()
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        if self._timer is None:
            # One timer per subscription, re-armed when it fires, rather than one per get: with
            # a thousand subscribers every event would arm and cancel a thousand timers.
            self._timer = loop.call_at(self._deadline, self._expire, loop)
        return await self._queue.get()

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if loop.time() < self._deadline:  # a later get moved the deadline
            self._timer = loop.call_at(self._deadline, self._expire, loop)
        elif self._queue.empty():
            self._queue.put_nowait(None)

    def drain(self) -> list[Event]:
        """The events waiting, without waiting."""
        items = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                items.append(item)
        return items

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class EventBus(Protocol):
    """What the runtime needs from a bus; a Redis bus (cluster mode) implements the same."""

    def publish(self, events: Sequence[Event]) -> None: ...

    def subscribe(
        self, task_id: str, after: int = 0
    ) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    def notify_work(self, *, local: bool = False) -> None:
        """Wake idle workers: every process's, or with ``local`` only this process's (a slot of
        its own freed up; telling the cluster would send every worker to the database)."""
        ...

    async def wait_for_work(self, timeout: float) -> bool: ...

    def send_cancel(self, task_id: str) -> None: ...

    def on_cancel(self, callback: Callable[[str], None]) -> None: ...

    async def aclose(self) -> None: ...


class LocalEventBus:
    """In-process bus with per-task log polling for events written by other processes."""

    def __init__(
        self, reader: LogReader | None = None, *, poll_interval: float = 0.5, buffer: int = 1024
    ) -> None:
        self._reader = reader
        self._poll_interval = poll_interval
        self._buffer = buffer
        self._subscribers: dict[str, set[Subscription]] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}
        self._high_water: dict[str, int] = {}
        self._work = asyncio.Event()
        self._cancel_callbacks: list[Callable[[str], None]] = []

    def publish(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.seq > self._high_water.get(event.task_id, 0) and event.task_id in self._subscribers:
                self._high_water[event.task_id] = event.seq
            for sub in self._subscribers.get(event.task_id, ()):
                sub.offer(event)

    @asynccontextmanager
    async def subscribe(self, task_id: str, after: int = 0) -> AsyncIterator[Subscription]:
        sub = Subscription(task_id, after, self._buffer)
        subs = self._subscribers.setdefault(task_id, set())
        subs.add(sub)
        self._high_water[task_id] = max(self._high_water.get(task_id, 0), after)
        if self._reader is not None and task_id not in self._pollers:
            self._pollers[task_id] = asyncio.create_task(self._poll(task_id), name=f"event-poller:{task_id}")
        try:
            yield sub
        finally:
            sub.close()
            subs.discard(sub)
            if not subs:
                del self._subscribers[task_id]
                self._high_water.pop(task_id, None)
                poller = self._pollers.pop(task_id, None)
                if poller is not None:
                    poller.cancel()

    async def _poll(self, task_id: str) -> None:
        assert self._reader is not None
        while task_id in self._subscribers:
            await asyncio.sleep(self._poll_interval)
            try:
                events = await self._reader(task_id, self._high_water.get(task_id, 0))
            except Exception:  # the stream's own reads report database errors
                continue
            if events:
                self.publish(events)

    def notify_work(self, *, local: bool = False) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._work.wait()
        except TimeoutError:
            return False
        self._work.clear()
        return True

    def send_cancel(self, task_id: str) -> None:
        for callback in self._cancel_callbacks:
            callback(task_id)

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._cancel_callbacks.append(callback)

    async def aclose(self) -> None:
        pollers = list(self._pollers.values())
        self._pollers.clear()
        for poller in pollers:
            poller.cancel()
        for poller in pollers:
            with contextlib.suppress(asyncio.CancelledError):
                await poller
