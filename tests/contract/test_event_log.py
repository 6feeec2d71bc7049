"""The event log contract: gap-free seqs, atomic with state changes, resumable reads."""

from __future__ import annotations

import asyncio

import pytest

from warden.events.stream import flatten, follow_batches
from warden.events.types import EventType
from warden.runtime import Runtime


async def test_seqs_are_contiguous_under_concurrent_appends(runtime: Runtime, task_id: str) -> None:

    async def writer(n: int) -> None:
        for i in range(10):
            async with runtime.log.transaction() as tx:
                await tx.emit(task_id, EventType.TOOL_OUTPUT, {"writer": n, "i": i})

    await asyncio.gather(*(writer(n) for n in range(5)))
    seqs = [e.seq for e in await runtime.log.read(task_id)]
    assert seqs == list(range(1, 52))


async def test_a_rolled_back_transaction_leaves_no_event(runtime: Runtime, task_id: str) -> None:
    with pytest.raises(RuntimeError):
        async with runtime.log.transaction() as tx:
            await tx.emit(task_id, EventType.TOOL_OUTPUT, {"text": "never"})
            raise RuntimeError("boom")
    events = await runtime.log.read(task_id)
    assert [e.type for e in events] == [EventType.TASK_QUEUED]
    async with runtime.log.transaction() as tx:
        event = await tx.emit(task_id, EventType.TOOL_OUTPUT, {"text": "after"})
    assert event.seq == 2


async def test_follow_resumes_after_a_seq_and_sees_live_events_once(runtime: Runtime, task_id: str) -> None:
    for i in range(3):
        async with runtime.log.transaction() as tx:
            await tx.emit(task_id, EventType.TOOL_OUTPUT, {"i": i})
    finished = asyncio.Event()

    async def is_finished() -> bool:
        return finished.is_set()

    seen: list[int] = []

    async def reader() -> None:
        async for event in flatten(
            follow_batches(runtime.log, task_id, after=2, is_finished=is_finished, idle_check=0.2)
        ):
            seen.append(event.seq)

    reading = asyncio.create_task(reader())
    for i in range(3):
        async with runtime.log.transaction() as tx:
            await tx.emit(task_id, EventType.TOOL_OUTPUT, {"live": i})
    async with runtime.log.transaction() as tx:
        await tx.emit(task_id, EventType.TASK_CANCELLED, {})
    finished.set()
    async with asyncio.timeout(5):
        await reading
    assert seen == [3, 4, 5, 6, 7, 8]


async def test_emit_later_fails_the_whole_transaction_when_its_guard_fails(
    runtime: Runtime, task_id: str
) -> None:
    """A deferred emit is checked at the latest at commit: a failed guard (a lost lease) rolls
    back everything the transaction wrote before it, and nothing is published."""
    from sqlalchemy import update

    from warden.events.log import Guard
    from warden.store.schema import tasks

    class Lost(Exception):
        pass

    lost = Guard(where=(tasks.c.attempt == 99,), values={}, error=Lost)
    async with runtime.log.bus.subscribe(task_id) as sub:
        with pytest.raises(Lost):
            async with runtime.log.transaction() as tx:
                await tx.write(update(tasks).where(tasks.c.id == task_id).values(agent_version="changed"))
                await tx.emit_later(task_id, [(EventType.TOOL_OUTPUT, {"text": "never"})], guard=lost)
        assert sub.drain() == []
    assert [e.type for e in await runtime.log.read(task_id)] == [EventType.TASK_QUEUED]
    async with runtime.log.db.read() as conn:
        record = (await conn.execute(tasks.select().where(tasks.c.id == task_id))).one()
    assert record.agent_version != "changed"

    async with runtime.log.bus.subscribe(task_id) as sub:
        async with runtime.log.transaction() as tx:
            await tx.emit_later(
                task_id, [(EventType.TOOL_OUTPUT, {"i": 1}), (EventType.TOOL_OUTPUT, {"i": 2})]
            )
            await tx.emit(task_id, EventType.TOOL_OUTPUT, {"i": 3})
        assert [(e.seq, e.data) for e in tx.emitted] == [(2, {"i": 1}), (3, {"i": 2}), (4, {"i": 3})]
        assert [e.seq for e in sub.drain()] == [2, 3, 4]


async def test_a_busy_follower_gets_what_queued_up_in_one_batch(runtime: Runtime, task_id: str) -> None:
    """Events published while the reader is away come back as one batch, in order, once each,
    with a gap in the live stream filled from the log."""
    finished = asyncio.Event()

    async def is_finished() -> bool:
        return finished.is_set()

    batches = follow_batches(runtime.log, task_id, after=0, is_finished=is_finished, idle_check=5.0)
    assert [[e.seq for e in b] for b in [await anext(batches)]] == [[1]]  # the backlog
    next_batch = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.05)  # the follower now waits on the live subscription
    async with runtime.log.transaction() as tx:
        await tx.emit_many(task_id, [(EventType.TOOL_OUTPUT, {"i": i}) for i in range(3)])
    assert [e.seq for e in await next_batch] == [2, 3, 4]
    # Written without being published (another process's event the bus missed), then live ones.
    async with runtime.log.db.transaction() as conn:
        from warden.events.log import Tx

        await Tx(conn, runtime.log.db).emit(task_id, EventType.TOOL_OUTPUT, {"unpublished": True})
    async with runtime.log.transaction() as tx:
        await tx.emit(task_id, EventType.TOOL_OUTPUT, {"i": 3})
        await tx.emit(task_id, EventType.TASK_CANCELLED, {})
    finished.set()
    async with asyncio.timeout(5):
        rest = [[e.seq for e in b] async for b in batches]
    assert rest == [[5, 6, 7]]


async def test_a_quiet_subscription_times_out_and_a_later_get_moves_the_deadline(
    runtime: Runtime, task_id: str
) -> None:
    loop = asyncio.get_running_loop()
    # After seq 1 (task.queued), or the bus's log poll would hand that one over.
    async with runtime.log.bus.subscribe(task_id, after=1) as sub:
        started = loop.time()
        assert await sub.get(timeout=0.1) is None
        assert 0.09 <= loop.time() - started < 1.0
        waiting = asyncio.ensure_future(sub.get(timeout=0.3))
        await asyncio.sleep(0.15)
        assert not waiting.done()
        async with runtime.log.transaction() as tx:
            await tx.emit(task_id, EventType.TOOL_OUTPUT, {"i": 1})
        event = await waiting
        assert event is not None and event.seq == 2
        # The deadline runs from the latest get, not the first.
        started = loop.time()
        assert await sub.get(timeout=0.4) is None
        assert loop.time() - started >= 0.39
