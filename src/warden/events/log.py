"""The append-only event log. `EventLog.transaction()` is the one way to change durable state
and record its events together (invariant 2); the events are published live only after the
transaction commits, so no subscriber ever sees an event the log does not hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ClauseElement,
    Connection,
    Executable,
    Float,
    Integer,
    String,
    bindparam,
    column,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.events.bus import EventBus
from warden.events.types import Event, EventType
from warden.store._sqlite_writer import WriterTransaction
from warden.store.database import Database, run_later, write
from warden.store.prepared import Prepared
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

    async def write(self, statement: Executable | Prepared, parameters: dict[str, Any] | None = None) -> None:
        """Execute a statement whose result is not needed. On SQLite it is sent to the writer
        with the transaction's next unit of work (its error, if any, surfaces there, at the
        latest when the transaction commits); on PostgreSQL it runs at once."""
        await write(self.conn, statement, parameters)

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
        new = await self.conn.run_sync(_appender(task_id, items, guard))
        if new is None:
            raise _guard_failed(task_id, guard)
        self.emitted.extend(new)
        return new

    async def emit_later(
        self, task_id: str, items: Sequence[tuple[EventType, dict[str, Any]]], *, guard: Guard | None = None
    ) -> None:
        """``emit_many`` for a caller that does not read the events back (``run_later``): on
        SQLite they are written with the transaction's next unit of work (at the latest its
        commit), which saves a hand-off to the writer thread; a failed guard then fails that
        unit and so the whole transaction. They are published after the commit like any other."""
        if not items:
            return
        append = _appender(task_id, items, guard)

        def unit(conn: Connection) -> None:
            new = append(conn)
            if new is None:
                raise _guard_failed(task_id, guard)
            # On SQLite the writer thread appends; ``emitted`` is read only once the commit's
            # future has resolved, which orders the two.
            self.emitted.extend(new)

        await run_later(self.conn, unit)


def _guard_failed(task_id: str, guard: Guard | None) -> Exception:
    return guard.error() if guard is not None else LookupError(f"no task {task_id}")


def _appender(
    task_id: str, items: Sequence[tuple[EventType, dict[str, Any]]], guard: Guard | None
) -> Callable[[Connection], list[Event] | None]:
    """The writer-side work of an emit: the seq bump and the event rows, in one hand-off; None
    when the task row did not match (no task, or the guard's conditions failed)."""
    count = len(items)
    emit, params = _emit_statements(task_id, count, guard)
    ts = time.time()

    def append(conn: Connection) -> list[Event] | None:
        if conn.dialect.name == "postgresql":
            # One round trip: the bump as a CTE that the rows' insert numbers itself from.
            rows = [{"ord": i, "type": etype.value, "data": data} for i, (etype, data) in enumerate(items, 1)]
            inserted = emit.bump_and_insert.run(conn, {**params, "e_ts": ts, "e_rows": rows})
            if not inserted:
                return None
            first = min(seq for (seq,) in inserted)
            return [Event(task_id, first + i, ts, etype, data) for i, (etype, data) in enumerate(items)]
        # SQLite: two statements, but in the same hand-off to the writer thread.
        bumped = emit.bump.run(conn, params)
        if not bumped:
            return None
        first = bumped[0][0] - count + 1
        new = [Event(task_id, first + i, ts, etype, data) for i, (etype, data) in enumerate(items)]
        _INSERT_EVENTS.run_many(
            conn,
            [
                {"task_id": e.task_id, "seq": e.seq, "ts": e.ts, "type": e.type.value, "data": e.data}
                for e in new
            ],
        )
        return new

    return append


_INSERT_EVENTS = Prepared(insert(events_table), column_keys=("task_id", "seq", "ts", "type", "data"))


@dataclass(frozen=True, slots=True)
class _Emit:
    bump: Prepared
    """``UPDATE tasks SET last_seq = last_seq + n … RETURNING last_seq`` (fenced by the guard)."""
    bump_and_insert: Prepared
    """PostgreSQL: the bump as a CTE and the rows' insert from it (``e_rows`` a JSON array of
    ``{ord, type, data}``), returning the new seqs."""
    keep: tuple[Any, ...]
    """The guard's objects whose identities key the cache."""


_EMITS: dict[tuple[Any, ...], _Emit] = {}


def _emit_statements(task_id: str, count: int, guard: Guard | None) -> tuple[_Emit, dict[str, Any]]:
    """The statements of an emit and their parameters. Statements are cached by the guard's
    conditions and SQL values (the queue builds those once per lease), with plain values as
    bind parameters: building a Core statement on every emit costs more than running it."""
    params: dict[str, Any] = {"e_task": task_id, "e_count": count}
    where: tuple[Any, ...] = ()
    sql_values: dict[str, Any] = {}
    plain: list[str] = []
    if guard is not None:
        where = guard.where
        for name, value in guard.values.items():
            if isinstance(value, ClauseElement):
                sql_values[name] = value
            else:
                plain.append(name)
                params[f"e_{name}"] = value
    # Identities are stable keys: the cache entry keeps the objects alive.
    key = (id(where), tuple((n, id(v)) for n, v in sorted(sql_values.items())), tuple(sorted(plain)))
    cached = _EMITS.get(key)
    if cached is None:
        if len(_EMITS) >= 1024:
            _EMITS.clear()
        values: dict[str, Any] = {
            "last_seq": tasks_table.c.last_seq + bindparam("e_count", type_=Integer),
            **sql_values,
            **{n: bindparam(f"e_{n}", type_=tasks_table.c[n].type) for n in plain},
        }
        bump = (
            update(tasks_table)
            .where(tasks_table.c.id == bindparam("e_task", type_=String), *where)
            .values(**values)
            .returning(tasks_table.c.last_seq)
        )
        cte = bump.cte("bump")
        rows = (
            func.jsonb_to_recordset(bindparam("e_rows", type_=JSONB))
            .table_valued(column("ord", Integer), column("type", String), column("data", JSONB))
            .render_derived(name="e", with_types=True)
        )
        from_bump = select(
            bindparam("e_task", type_=String),
            cte.c.last_seq - bindparam("e_count", type_=Integer) + rows.c.ord,
            bindparam("e_ts", type_=Float),
            rows.c.type,
            rows.c.data,
        ).select_from(cte.join(rows, true()))
        bump_and_insert = (
            insert(events_table)
            .from_select(["task_id", "seq", "ts", "type", "data"], from_bump)
            .returning(events_table.c.seq)
        )
        cached = _EMITS[key] = _Emit(Prepared(bump), Prepared(bump_and_insert), (where, *sql_values.values()))
    return cached, params


class EventLog:
    """Reads and writes task events; fans them out through the bus after commit."""

    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        tx: Tx | None = None
        try:
            async with self.db.transaction() as conn:
                tx = Tx(conn, self.db)
                yield tx
        except asyncio.CancelledError:
            # Cancelled while the commit was in flight, the SQLite writer waits for its
            # outcome: if it committed, the events exist and are published all the same.
            if tx is not None and isinstance(tx.conn, WriterTransaction) and tx.conn.committed:
                self._committed(tx)
            raise
        assert tx is not None
        self._committed(tx)

    def _committed(self, tx: Tx) -> None:
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
