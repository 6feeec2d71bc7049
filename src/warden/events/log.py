"""The append-only event log. `EventLog.transaction()` is the one way to change durable state
and record its events together (invariant 2); the events are published live only after the
transaction commits, so no subscriber ever sees an event the log does not hold."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.events.bus import EventBus
from warden.events.types import Event, EventType
from warden.store.database import Database
from warden.store.schema import events as events_table
from warden.store.schema import tasks as tasks_table


@dataclass(frozen=True, slots=True)
class Guard:
    """Extra conditions and values for the task-row update every emit makes, so proving a
    lease and extending it costs no statement of its own."""

    where: tuple[Any, ...]
    values: dict[str, Any]
    error: Callable[[], Exception]
    """Raised when the conditions do not hold (the row was not updated)."""


class Tx:
    """A write transaction that can also emit events."""

    def __init__(self, conn: AsyncConnection, db: Database) -> None:
        self.conn = conn
        self.db = db
        self.emitted: list[Event] = []
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the transaction has committed (wake workers, signal cancels)."""
        self._after_commit.append(callback)

    async def emit(
        self, task_id: str, type: EventType, data: dict[str, Any] | None = None, *, guard: Guard | None = None
    ) -> Event:
        (event,) = await self.emit_many(task_id, [(type, data or {})], guard=guard)
        return event

    async def emit_many(
        self, task_id: str, items: Sequence[tuple[EventType, dict[str, Any]]], *, guard: Guard | None = None
    ) -> list[Event]:
        if not items:
            return []
        count = len(items)
        statement = update(tasks_table).where(tasks_table.c.id == task_id)
        values: dict[str, Any] = {"last_seq": tasks_table.c.last_seq + count}
        if guard is not None:
            statement = statement.where(*guard.where)
            values.update(guard.values)
        row = (await self.conn.execute(statement.values(**values).returning(tasks_table.c.last_seq))).first()
        if row is None:
            raise guard.error() if guard is not None else LookupError(f"no task {task_id}")
        last = row.last_seq
        ts = time.time()
        new = [Event(task_id, last - count + 1 + i, ts, etype, data) for i, (etype, data) in enumerate(items)]
        await self.conn.execute(
            insert(events_table),
            [
                {"task_id": e.task_id, "seq": e.seq, "ts": e.ts, "type": e.type.value, "data": e.data}
                for e in new
            ],
        )
        self.emitted.extend(new)
        return new


class EventLog:
    """Reads and writes task events; fans them out through the bus after commit."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.db.transaction() as conn:
            tx = Tx(conn, self.db)
            yield tx
        if tx.emitted:
            self.bus.publish(tx.emitted)
        for callback in tx._after_commit:
            callback()

    async def read(self, task_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        async with self.db.read() as conn:
            return await read_events(conn, task_id, after, limit)


async def read_events(conn: AsyncConnection, task_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
    rows = await conn.execute(
        select(events_table.c.seq, events_table.c.ts, events_table.c.type, events_table.c.data)
        .where(events_table.c.task_id == task_id, events_table.c.seq > after)
        .order_by(events_table.c.seq)
        .limit(limit)
    )
    return [Event(task_id, r.seq, r.ts, EventType(r.type), r.data) for r in rows]
