"""The cluster-mode event bus: Redis wakes idle workers in every process, fans each task's events
out to every process that streams the task, and carries cancel signals between processes.

Redis is a fast path, never the record. Every event is in the database log before it is
published, subscribers re-read the log on a gap or a lag (`events/stream.py: follow_batches`), and while
Redis is unreachable this bus reads the log of each streamed task every ``poll_interval`` (as
`LocalEventBus` does) and idle workers and cancel checks poll the database as they always do.
It reconnects with backoff, then re-reads the log once, so an outage loses nothing and fails
nothing: ``publish``, ``notify_work`` and ``send_cancel`` never raise and never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from warden.events.bus import LocalEventBus, LogReader, Subscription
from warden.events.types import Event, EventType

log = logging.getLogger("warden.events.redis")

_Command = tuple[str, asyncio.Future[None]]


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _credentials = head.partition("://")
    return f"{scheme}://***@{tail}"


class RedisEventBus:
    """`EventBus` over Redis pub/sub: one channel per streamed task, one for wake-ups, one for
    cancel signals. Messages carry the sending process's id so it ignores its own echo."""

    def __init__(
        self,
        url: str,
        reader: LogReader,
        *,
        poll_interval: float = 0.5,
        buffer: int = 1024,
        prefix: str = "warden",
        op_timeout: float = 5.0,
        ping_interval: float = 5.0,
        backoff_max: float = 5.0,
        linger: float = 10.0,
        outbox_limit: int = 2000,
        work_every: float = 0.1,
    ) -> None:
        self.url = url
        self._reader = reader
        self._poll_interval = poll_interval
        self._op_timeout = op_timeout
        self._ping_interval = ping_interval
        self._backoff_max = backoff_max
        self._linger = linger
        self._local = LocalEventBus(None, buffer=buffer)
        """In-process delivery, wake-ups and cancel callbacks; Redis feeds it from other processes."""
        self.origin = uuid.uuid4().hex[:16]
        self._work_channel = f"{prefix}:work"
        self._cancel_channel = f"{prefix}:cancel"
        self._event_prefix = f"{prefix}:events:"
        self._watchers: dict[str, int] = {}
        """Local subscribers per task: the tasks whose channels this process listens to."""
        self._high_water: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}
        """Channels of tasks nobody here streams any more, unsubscribed after ``linger`` s."""
        self._outbox: deque[tuple[str, str]] = deque(maxlen=outbox_limit)
        self._outbox_ready = asyncio.Event()
        self._work_pending = False
        self._work_every = work_every
        self._last_work_sent = 0.0
        self._sending = False
        self._commands: asyncio.Queue[_Command] = asyncio.Queue()
        self._subscribed: set[str] = set()
        self._confirming: dict[str, list[asyncio.Future[None]]] = {}
        self._last_received = 0.0
        self._healthy = False
        self._ever_connected = False
        self._first_attempt = asyncio.Event()
        self._backoff = 0.1
        self._manager: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether Redis answers now (False: this process falls back to polling the log)."""
        return self._healthy

    def start(self) -> None:
        """Connect now rather than on first use (needs a running event loop)."""
        self._start()

    # -- the EventBus protocol -------------------------------------------------------------

    def publish(self, events: Sequence[Event]) -> None:
        self._start()
        self._deliver(events)
        for event in events:
            self._outbox.append((self._event_prefix + event.task_id, f"{self.origin} {event.wire_json}"))
        self._outbox_ready.set()

    @asynccontextmanager
    async def subscribe(self, task_id: str, after: int = 0) -> AsyncIterator[Subscription]:
        self._start()
        async with self._local.subscribe(task_id, after) as sub:
            self._watchers[task_id] = self._watchers.get(task_id, 0) + 1
            self._high_water[task_id] = max(self._high_water.get(task_id, 0), after)
            self._idle_since.pop(task_id, None)
            try:
                await self._listen(task_id)
                yield sub
            finally:
                remaining = self._watchers[task_id] - 1
                if remaining:
                    self._watchers[task_id] = remaining
                else:
                    del self._watchers[task_id]
                    self._high_water.pop(task_id, None)
                    self._idle_since[task_id] = time.monotonic()

    def notify_work(self, *, local: bool = False) -> None:
        self._local.notify_work()
        if not local and self._start():
            self._work_pending = True
            self._outbox_ready.set()

    async def wait_for_work(self, timeout: float) -> bool:
        self._start()
        return await self._local.wait_for_work(timeout)

    def send_cancel(self, task_id: str) -> None:
        self._local.send_cancel(task_id)
        if self._start():
            self._outbox.append((self._cancel_channel, f"{self.origin} {task_id}"))
            self._outbox_ready.set()

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        self._start()
        self._local.on_cancel(callback)

    async def aclose(self) -> None:
        if self._closed:
            return
        # Events of the last moments (a released task's `task.requeued`) reach other processes.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                while self._healthy and (self._outbox or self._work_pending or self._sending):  # noqa: ASYNC110 - at most 1 s, at close
                    await asyncio.sleep(0.01)
        self._closed = True
        for task in (self._manager, self._poller):
            if task is not None:
                task.cancel()
        for task in (self._manager, self._poller):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._manager = self._poller = None
        await self._local.aclose()

    # -- delivery --------------------------------------------------------------------------

    def _deliver(self, events: Sequence[Event]) -> None:
        for event in events:
            if event.task_id in self._watchers and event.seq > self._high_water.get(event.task_id, 0):
                self._high_water[event.task_id] = event.seq
        self._local.publish(events)

    async def _listen(self, task_id: str) -> None:
        """Make sure this process receives the task's events before the caller reads the log's
        backlog, so nothing falls between the two; without Redis the poller reads the log."""
        if not self._first_attempt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._op_timeout):
                    await self._first_attempt.wait()
        channel = self._event_prefix + task_id
        if not self._healthy or channel in self._subscribed:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands.put_nowait((channel, done))
        # A silent Redis is detected by the session's watchdog, which re-reads the log.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._op_timeout):
                await asyncio.shield(done)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if kind == "subscribe" and isinstance(channel, str):
            self._subscribed.add(channel)
            for waiter in self._confirming.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)
            return
        data = message.get("data")
        if kind != "message" or not isinstance(channel, str) or not isinstance(data, str):
            return
        origin, _, body = data.partition(" ")
        if origin == self.origin:
            return
        if channel == self._work_channel:
            self._local.notify_work()
        elif channel == self._cancel_channel:
            self._local.send_cancel(body)
        elif channel.startswith(self._event_prefix):
            event = _decode(body)
            if event is not None:
                self._deliver([event])

    async def _catch_up(self) -> None:
        """Read each streamed task's log after the last event delivered here."""
        for task_id in list(self._watchers):
            try:
                events = await self._reader(task_id, self._high_water.get(task_id, 0))
            except Exception:  # the stream's own reads report database errors
                continue
            if events and task_id in self._watchers:
                self._deliver(events)

    async def _poll_while_down(self) -> None:
        while not self._healthy:
            await asyncio.sleep(self._poll_interval)
            if not self._healthy:
                await self._catch_up()

    # -- the connection --------------------------------------------------------------------

    def _start(self) -> bool:
        """Start the connection manager on first use (needs a running loop); False if closed."""
        if self._closed:
            return False
        if self._manager is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return False
            self._manager = asyncio.create_task(self._manage(), name="redis-bus")
            self._set_down()
        return True

    def _set_down(self) -> None:
        self._healthy = False
        self._subscribed.clear()
        for waiters in self._confirming.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._confirming.clear()
        if (self._poller is None or self._poller.done()) and not self._closed:
            self._poller = asyncio.create_task(self._poll_while_down(), name="redis-bus-poller")

    async def _manage(self) -> None:
        while True:
            client: Redis = Redis.from_url(
                self.url,
                decode_responses=True,
                socket_connect_timeout=self._op_timeout,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                await self._session(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._healthy:
                    log.warning(
                        "Redis at %s is unreachable (%s): falling back to polling the database; "
                        "reconnecting with backoff",
                        _safe_url(self.url),
                        _describe(exc),
                    )
                elif not self._ever_connected and not self._first_attempt.is_set():
                    log.warning(
                        "Redis at %s is unreachable (%s): polling the database until it answers",
                        _safe_url(self.url),
                        _describe(exc),
                    )
            finally:
                self._set_down()
                self._first_attempt.set()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._op_timeout):
                        await client.aclose()
            await asyncio.sleep(self._backoff * random.uniform(0.5, 1.0))
            self._backoff = min(self._backoff * 2, self._backoff_max)

    async def _session(self, client: Redis) -> None:
        pubsub: PubSub = client.pubsub()
        try:
            channels = [self._work_channel, self._cancel_channel]
            channels += [self._event_prefix + task_id for task_id in self._watchers]
            async with asyncio.timeout(self._op_timeout * 2):
                await client.ping()
                await pubsub.subscribe(*channels)
                waiting = set(channels)
                while waiting:
                    message = await pubsub.get_message(timeout=self._op_timeout)
                    if message is not None:
                        self._dispatch(message)
                        if message.get("type") == "subscribe":
                            waiting.discard(message["channel"])
            self._healthy = True
            self._backoff = 0.1
            self._last_received = time.monotonic()
            if self._ever_connected:
                log.warning("Redis at %s answers again: live fan-out resumed", _safe_url(self.url))
            self._ever_connected = True
            self._first_attempt.set()
            if self._poller is not None:
                self._poller.cancel()
                self._poller = None
            async with asyncio.TaskGroup() as group:
                group.create_task(self._receive(pubsub))
                group.create_task(self._send(client))
                group.create_task(self._control(pubsub))
                # Whatever was published while this process was not listening is in the log.
                await self._catch_up()
                self._local.notify_work()
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._op_timeout):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _receive(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            self._last_received = time.monotonic()
            if message is not None:
                self._dispatch(message)

    async def _send(self, client: Redis) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            if not self._outbox and not self._work_pending:
                continue
            batch = list(self._outbox)
            self._outbox.clear()
            if self._work_pending:
                # Every finished task notifies too: one wake-up per interval wakes every idle
                # worker, and more would only make them all query the queue again.
                wait = self._last_work_sent + self._work_every - time.monotonic()
                if wait <= 0:
                    self._work_pending = False
                    self._last_work_sent = time.monotonic()
                    batch.append((self._work_channel, f"{self.origin} "))
                else:
                    asyncio.get_running_loop().call_later(wait, self._outbox_ready.set)
            if not batch:
                continue
            self._sending = True
            try:
                async with asyncio.timeout(self._op_timeout):
                    pipe = client.pipeline(transaction=False)
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                    await pipe.execute()
            except BaseException:
                # Sent again after reconnecting, unless the outbox overflowed meanwhile;
                # subscribers re-read the log either way.
                self._outbox.extendleft(reversed(batch))
                raise
            finally:
                self._sending = False

    async def _control(self, pubsub: PubSub) -> None:
        """Subscribe and unsubscribe task channels, and check that Redis still answers."""
        next_ping = time.monotonic() + self._ping_interval
        while True:
            wait = max(0.0, next_ping - time.monotonic())
            try:
                async with asyncio.timeout(wait):
                    channel, done = await self._commands.get()
            except TimeoutError:
                pass
            else:
                if channel in self._subscribed:
                    done.set_result(None)
                elif channel in self._confirming:
                    self._confirming[channel].append(done)
                else:
                    self._confirming[channel] = [done]
                    await pubsub.subscribe(channel)
                continue
            now = time.monotonic()
            if now - self._last_received > self._ping_interval * 3:
                raise ConnectionError(f"no answer from Redis for {now - self._last_received:.1f} s")
            await pubsub.ping()
            next_ping = now + self._ping_interval
            stale = [t for t, since in self._idle_since.items() if now - since > self._linger]
            for task_id in stale:
                del self._idle_since[task_id]
                channel = self._event_prefix + task_id
                if task_id not in self._watchers and channel in self._subscribed:
                    self._subscribed.discard(channel)
                    await pubsub.unsubscribe(channel)


def _decode(body: str) -> Event | None:
    try:
        wire = json.loads(body)
        event = Event(
            wire["task_id"], int(wire["seq"]), float(wire["ts"]), EventType(wire["type"]), wire["data"]
        )
    except (ValueError, KeyError, TypeError):
        log.debug("ignored a malformed event message on Redis")
        return None
    # The sender's serialisation is the wire form: every stream here reuses it as it is.
    event.__dict__["wire_json"] = body
    return event


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
