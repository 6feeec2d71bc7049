"""The Redis event bus between two processes' buses (two instances, each its own origin):
events, wake-ups and cancel signals cross at once; with Redis gone, streams fall back to the
log and nothing fails; when Redis returns, the buses reconnect by themselves."""

from __future__ import annotations

import asyncio
import time

from tests.cluster._services import RedisServer
from warden.events.redis_bus import RedisEventBus
from warden.events.types import Event, EventType


class FakeLog:
    """The database log both buses read when they must (gaps, outages)."""

    def __init__(self) -> None:
        self.events: dict[str, list[Event]] = {}

    def append(self, task_id: str, kind: EventType = EventType.MODEL_DELTA) -> Event:
        events = self.events.setdefault(task_id, [])
        event = Event(task_id, len(events) + 1, time.time(), kind, {"text": "x"})
        events.append(event)
        return event

    async def read(self, task_id: str, after: int) -> list[Event]:
        return [e for e in self.events.get(task_id, []) if e.seq > after]


async def _connected(*buses: RedisEventBus, within: float = 10.0) -> None:
    for bus in buses:
        bus.start()
    async with asyncio.timeout(within):
        while not all(bus.connected for bus in buses):
            await asyncio.sleep(0.02)


async def test_events_wakeups_and_cancels_reach_the_other_process(redis_server: RedisServer) -> None:
    log = FakeLog()
    api = RedisEventBus(redis_server.url, log.read, poll_interval=0.2)
    worker = RedisEventBus(redis_server.url, log.read, poll_interval=0.2)
    cancelled: list[str] = []
    try:
        worker.on_cancel(cancelled.append)
        await _connected(api, worker)
        async with api.subscribe("t1") as sub:
            first = log.append("t1")
            worker.publish([first])
            received = await sub.get(timeout=2)
            assert received == first
            assert received is not None and received.wire_json == first.wire_json

            waiting = asyncio.create_task(worker.wait_for_work(5))
            await asyncio.sleep(0.05)
            started = time.monotonic()
            api.notify_work()
            assert await waiting
            assert time.monotonic() - started < 0.5

            api.send_cancel("t1")
            async with asyncio.timeout(2):
                while cancelled != ["t1"]:
                    await asyncio.sleep(0.01)
    finally:
        await api.aclose()
        await worker.aclose()


async def test_an_outage_falls_back_to_the_log_and_the_buses_reconnect(redis_server: RedisServer) -> None:
    log = FakeLog()
    api = RedisEventBus(redis_server.url, log.read, poll_interval=0.1, backoff_max=0.5)
    worker = RedisEventBus(redis_server.url, log.read, poll_interval=0.1, backoff_max=0.5)
    try:
        await _connected(api, worker)
        async with api.subscribe("t2") as sub:
            await redis_server.kill()
            async with asyncio.timeout(5):
                while api.connected or worker.connected:
                    await asyncio.sleep(0.02)
            # Written and published while Redis is down: the subscriber reads it from the log.
            during = log.append("t2")
            worker.publish([during])
            worker.notify_work()
            worker.send_cancel("t2")
            assert await sub.get(timeout=2) == during

            await redis_server.start()
            await _connected(api, worker)
            after = log.append("t2", EventType.TASK_COMPLETED)
            worker.publish([after])
            seen = await sub.get(timeout=2)
            # The outbox may still deliver the outage's event once more: streams drop repeats by seq.
            while seen is not None and seen.seq < after.seq:
                seen = await sub.get(timeout=2)
            assert seen == after
    finally:
        await api.aclose()
        await worker.aclose()
