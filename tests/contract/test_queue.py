"""The queue contract every storage backend must pass (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.conftest import MakeConfig
from warden.events.types import EventType
from warden.queue.lease import LeaseLost
from warden.runtime import Runtime
from warden.service.keys import Principal
from warden.service.tasks import Submission
from warden.store.schema import sessions, tasks
from warden.store.tasks import TaskStatus


@pytest.fixture
async def runtime(make_config: MakeConfig, database_url: str) -> AsyncIterator[Runtime]:
    rt = await Runtime.open(
        make_config(database_url=database_url, worker={"lease_ttl": 30, "max_attempts": 2})
    )
    try:
        yield rt
    finally:
        await rt.close()


async def _principal(rt: Runtime) -> Principal:
    key = await rt.keys.create("acme", name="t", scopes=["admin"])
    return await rt.keys.authenticate(key.secret)


async def _submit(rt: Runtime, n: int = 1, **kwargs: Any) -> list[str]:
    p = await _principal(rt)
    ids = []
    for i in range(n):
        task, _ = await rt.tasks.submit(p, Submission(agent="tester", input=f"job {i}", **kwargs))
        ids.append(task.id)
    return ids


async def _status(rt: Runtime, task_id: str) -> TaskStatus:
    async with rt.db.read() as conn:
        from warden.store.tasks import get_task

        record = await get_task(conn, task_id)
        assert record is not None
        return record.status


async def _expire(rt: Runtime, task_id: str) -> None:
    async with rt.db.transaction() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(lease_until=0.0))


async def test_lease_marks_running_and_emits_started(runtime: Runtime) -> None:
    (task_id,) = await _submit(runtime)
    leases = await runtime.queue.lease("w1", 5)
    assert [lease.task_id for lease in leases] == [task_id]
    assert leases[0].attempt == 1
    assert await _status(runtime, task_id) is TaskStatus.RUNNING
    events = await runtime.log.read(task_id)
    assert [e.type for e in events] == [EventType.TASK_QUEUED, EventType.TASK_STARTED]
    assert [e.seq for e in events] == [1, 2]


async def test_concurrent_leasers_never_share_a_task(runtime: Runtime) -> None:
    ids = await _submit(runtime, 12)
    results = await asyncio.gather(*(runtime.queue.lease(f"w{i}", 3) for i in range(6)))
    leased = [lease.task_id for batch in results for lease in batch]
    assert sorted(leased) == sorted(ids)
    assert len(set(leased)) == len(leased)


async def test_expired_lease_is_requeued_and_the_attempt_counted(runtime: Runtime) -> None:
    (task_id,) = await _submit(runtime)
    await runtime.queue.lease("w1", 1)
    await _expire(runtime, task_id)
    assert await runtime.queue.reap() == [task_id]
    assert await _status(runtime, task_id) is TaskStatus.QUEUED
    (again,) = await runtime.queue.lease("w2", 1)
    assert again.attempt == 2
    types = [e.type for e in await runtime.log.read(task_id)]
    assert types.count(EventType.TASK_REQUEUED) == 1


async def test_task_out_of_attempts_fails_with_its_error(runtime: Runtime) -> None:
    (task_id,) = await _submit(runtime)
    for _ in range(2):
        await runtime.queue.lease("w1", 1)
        await _expire(runtime, task_id)
        await runtime.queue.reap()
    assert await _status(runtime, task_id) is TaskStatus.FAILED
    last = (await runtime.log.read(task_id))[-1]
    assert last.type is EventType.TASK_FAILED
    assert last.data["error"]["code"] == "lease_expired"


async def test_stale_runner_is_fenced_off_after_its_lease_moved_on(runtime: Runtime) -> None:
    (task_id,) = await _submit(runtime)
    (stale,) = await runtime.queue.lease("w1", 1)
    await _expire(runtime, task_id)
    await runtime.queue.reap()
    await runtime.queue.lease("w2", 1)
    with pytest.raises(LeaseLost):
        async with runtime.log.transaction() as tx:
            await runtime.queue.fence(tx, stale)
            await tx.emit(task_id, EventType.MODEL_DELTA, {"text": "from a ghost"})
    assert all(e.data.get("text") != "from a ghost" for e in await runtime.log.read(task_id))


async def test_heartbeat_keeps_the_lease_and_reports_lost_ones(runtime: Runtime) -> None:
    first, second = await _submit(runtime, 2)
    leases = await runtime.queue.lease("w1", 2)
    await _expire(runtime, second)
    await runtime.queue.reap()
    held = await runtime.queue.heartbeat(leases)
    assert held == {first}


async def test_retryable_failure_requeues_with_backoff_then_fails(runtime: Runtime) -> None:
    (task_id,) = await _submit(runtime)
    (lease,) = await runtime.queue.lease("w1", 1)
    error = {"code": "model_error", "message": "upstream 503"}
    assert await runtime.queue.retry_or_fail(lease, error, retryable=True) is TaskStatus.QUEUED
    async with asyncio.timeout(5):
        while not (leases := await runtime.queue.lease("w1", 1)):
            await asyncio.sleep(0.02)
    assert await runtime.queue.retry_or_fail(leases[0], error, retryable=True) is TaskStatus.FAILED
    last = (await runtime.log.read(task_id))[-1]
    assert last.type is EventType.TASK_FAILED and last.data["error"] == error


async def test_non_retryable_failure_fails_at_once(runtime: Runtime) -> None:
    await _submit(runtime)
    (lease,) = await runtime.queue.lease("w1", 1)
    status = await runtime.queue.retry_or_fail(lease, {"code": "bad", "message": "no"}, retryable=False)
    assert status is TaskStatus.FAILED


async def test_graceful_release_does_not_count_the_attempt(runtime: Runtime) -> None:
    await _submit(runtime)
    (lease,) = await runtime.queue.lease("w1", 1)
    assert await runtime.queue.release(lease, "shutting down")
    (again,) = await runtime.queue.lease("w2", 1)
    assert again.attempt == 1


async def test_a_lease_carries_what_the_worker_starts_from(runtime: Runtime) -> None:
    (task_id,) = await _submit(runtime)
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "reply"}]
    async with runtime.db.transaction() as conn:
        await conn.execute(update(tasks).where(tasks.c.id == task_id).values(run_seconds=1.5))
        session_id = (
            await conn.execute(select(tasks.c.session_id).where(tasks.c.id == task_id))
        ).scalar_one()
        await conn.execute(update(sessions).where(sessions.c.id == session_id).values(history=history))
    (lease,) = await runtime.queue.lease("w1", 1)
    assert (lease.input, lease.history, lease.run_seconds, lease.session_id) == (
        "job 0",
        history,
        1.5,
        session_id,
    )
    # Nothing ever ran: the loop need not look for a journal, checkpoints or approvals.
    assert lease.fresh
    assert await runtime.queue.release(lease, "shutting down")
    (again,) = await runtime.queue.lease("w2", 1)
    # Same attempt number, but an attempt did start (and may have journalled): not fresh.
    assert again.attempt == 1 and not again.fresh
    await _submit(runtime)  # a second task, never leased
    await _expire(runtime, again.task_id)
    await runtime.queue.reap()
    leases = await runtime.queue.lease("w3", 5)
    assert {(lease.task_id, lease.fresh) for lease in leases} >= {(task_id, False)}
    assert sum(lease.fresh for lease in leases) == 1


async def test_enqueued_task_of_a_busy_session_waits_for_the_first(runtime: Runtime) -> None:
    (first,) = await _submit(runtime)
    p = await _principal(runtime)
    async with runtime.db.read() as conn:
        from warden.store.tasks import get_task

        record = await get_task(conn, first)
        assert record is not None
    # Same tenant as the session's task: look up the tenant's principal by re-using the session.
    p = await runtime.keys.authenticate(
        (await runtime.keys.create("acme", name="t2", scopes=["admin"])).secret
    )
    second, _ = await runtime.tasks.submit(
        p, Submission(agent=None, input="next", session_id=record.session_id)
    )
    leases = await runtime.queue.lease("w1", 5)
    assert [lease.task_id for lease in leases] == [first]
    assert await runtime.queue.lease("w1", 5) == []
    async with runtime.log.transaction() as tx:
        await runtime.queue.finish(tx, leases[0], TaskStatus.COMPLETED, output="done")
    (next_lease,) = await runtime.queue.lease("w1", 5)
    assert next_lease.task_id == second.id


async def test_lease_never_takes_more_than_asked(runtime: Runtime) -> None:
    await _submit(runtime, 10)
    assert len(await runtime.queue.lease("w1", 1)) == 1
    assert len(await runtime.queue.lease("w1", 3)) == 3
    assert len(await runtime.queue.lease("w1", 100)) == 6


async def test_a_dead_or_stopping_workers_tasks_go_back_to_their_place_in_line(runtime: Runtime) -> None:
    first, second = await _submit(runtime, 2)
    leases = {lease.task_id: lease for lease in await runtime.queue.lease("w1", 2)}
    assert set(leases) == {first, second}
    newer = await _submit(runtime, 3)
    await _expire(runtime, first)
    assert await runtime.queue.reap() == [first]
    assert await runtime.queue.release(leases[second], "shutting down")
    # Both resume before the three tasks submitted after them.
    assert {lease.task_id for lease in await runtime.queue.lease("w2", 2)} == {first, second}
    assert {lease.task_id for lease in await runtime.queue.lease("w2", 5)} == set(newer)


async def test_submit_answers_with_the_task_as_stored(runtime: Runtime) -> None:
    """The record a submit returns is built without reading the row back; it must be the row."""
    p = await _principal(runtime)
    created, is_new = await runtime.tasks.submit(
        p, Submission(agent="tester", input="as stored", metadata={"k": "v"}, idempotency_key="once")
    )
    assert is_new
    assert created == await runtime.tasks.get(p, created.id)
    replay, is_new = await runtime.tasks.submit(
        p, Submission(agent="tester", input="as stored", idempotency_key="once")
    )
    assert not is_new and replay == created
    # A task held behind its session's active one: no available_at yet.
    held, _ = await runtime.tasks.submit(
        p, Submission(agent=None, input="next", session_id=created.session_id)
    )
    assert held.available_at is None
    assert held == await runtime.tasks.get(p, held.id)
