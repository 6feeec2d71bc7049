"""`Prepared` statements run on the driver's cursor: on both backends they must behave as
``Connection.execute`` would (same rows, same parameter processing, same exception types)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from warden.runtime import Runtime
from warden.store.prepared import Prepared
from warden.store.schema import events, tasks, tenants


async def _in_transaction(rt: Runtime, fn: Callable[[Connection], Any]) -> Any:
    async with rt.db.transaction() as conn:
        return await conn.run_sync(fn)


async def test_rows_go_through_the_bind_processors_and_read_back_as_sqlalchemy_wrote_them(
    runtime: Runtime,
    task_id: str,
) -> None:
    statement = Prepared(insert(events), column_keys=("task_id", "seq", "ts", "type", "data"))
    rows = [
        {"task_id": task_id, "seq": 100 + i, "ts": 1.5, "type": "tool.output", "data": {"i": i, "é": [1]}}
        for i in (1, 2)
    ]
    await _in_transaction(runtime, lambda c: statement.run_many(c, rows))
    async with runtime.db.read() as conn:
        found = (
            await conn.execute(
                select(events.c.seq, events.c.data).where(events.c.task_id == task_id, events.c.seq > 100)
            )
        ).all()
    assert sorted((r.seq, r.data) for r in found) == [(101, {"i": 1, "é": [1]}), (102, {"i": 2, "é": [1]})]


async def test_returning_gives_rows_and_values_the_statement_carries_are_bound(
    runtime: Runtime, task_id: str
) -> None:
    await _in_transaction(
        runtime, lambda c: c.execute(update(tasks).where(tasks.c.id == task_id).values(lease_owner="w1"))
    )
    bump = Prepared(
        update(tasks)
        .where(tasks.c.id == bindparam("task"), tasks.c.lease_owner == "w1")
        .values(last_seq=tasks.c.last_seq + bindparam("n"))
        .returning(tasks.c.last_seq)
    )
    before = (await _in_transaction(runtime, lambda c: bump.run(c, {"task": task_id, "n": 0})))[0][0]
    assert await _in_transaction(runtime, lambda c: bump.run(c, {"task": task_id, "n": 3})) == [(before + 3,)]
    assert await _in_transaction(runtime, lambda c: bump.run(c, {"task": "nope", "n": 1})) == []
    fenced = Prepared(
        update(tasks)
        .where(tasks.c.id == bindparam("task"), tasks.c.lease_owner == "w2")
        .values(last_seq=0)
        .returning(tasks.c.id)
    )
    assert await _in_transaction(runtime, lambda c: fenced.run(c, {"task": task_id})) == []


async def test_a_driver_error_is_wrapped_as_sqlalchemy_wraps_it_and_rolls_back(runtime: Runtime) -> None:
    statement = Prepared(insert(tenants).values(id=bindparam("i"), name=bindparam("n"), created_at=0.0))

    def twice(conn: Connection) -> None:
        statement.run(conn, {"i": "t2", "n": "other"})
        statement.run(conn, {"i": "t3", "n": "other"})

    with pytest.raises(IntegrityError):
        await _in_transaction(runtime, twice)
    async with runtime.db.read() as conn:
        assert (await conn.execute(select(tenants.c.id).where(tenants.c.name == "other"))).all() == []


async def test_a_missing_parameter_is_named(runtime: Runtime, task_id: str) -> None:
    statement = Prepared(select(tasks.c.id).where(tasks.c.id == bindparam("task")))
    with pytest.raises(KeyError, match="'task'"):
        await _in_transaction(runtime, lambda c: statement.run(c, {}))
    assert await _in_transaction(runtime, lambda c: statement.run(c, {"task": task_id})) == [(task_id,)]


async def test_statements_needing_python_defaults_are_refused(runtime: Runtime) -> None:
    # tasks.attempt has a Python-side default that only SQLAlchemy's execution fills in.
    statement = Prepared(insert(tasks), column_keys=("id", "tenant_id"))
    with pytest.raises(TypeError, match="Python-side defaults"):
        await _in_transaction(runtime, lambda c: statement.run(c, {"id": "x", "tenant_id": "t1"}))
