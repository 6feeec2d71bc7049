"""The durable task queue on the tasks table: enqueue, lease (PostgreSQL `FOR UPDATE SKIP
LOCKED`; SQLite's single writer), heartbeat, fencing, retry with backoff, finish and reap.
Every state change writes its event in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Float, Integer, String, and_, bindparam, func, insert, or_, select, update

from warden.events.log import EventLog, Guard, Tx
from warden.events.types import EventType
from warden.queue.lease import Lease, LeaseLost
from warden.store.database import Database, run_later
from warden.store.prepared import Prepared, per_dialect
from warden.store.schema import approvals, sessions, tasks
from warden.store.tasks import ACTIVE_STATUSES, TaskRecord, TaskStatus
from warden.telemetry.metrics import observe_task_end
from warden.telemetry.tracing import current_traceparent

_SESSION_HISTORY = (
    select(sessions.c.history).where(sessions.c.id == tasks.c.session_id).scalar_subquery().label("history")
)
"""The leased task's session history, read by the lease statement itself."""


class SqlTaskQueue:
    def __init__(self, log: EventLog, *, lease_ttl: float, retry_backoff: float = 2.0) -> None:
        self.log = log
        self.db = log.db
        self.lease_ttl = lease_ttl
        self.retry_backoff = retry_backoff
        self._lease_until = self.db.now() + lease_ttl
        self._guard_where: dict[tuple[str, int], tuple[Any, ...]] = {}
        self._statements = _statements(self.db)

    # -- producers -------------------------------------------------------------------------

    async def enqueue(self, tx: Tx, values: dict[str, Any], *, held: bool = False) -> Enqueued:
        """Insert a queued task (``values``: the `ENQUEUED_COLUMNS`; ``traceparent`` defaults to
        the current trace's); ``held`` tasks wait for their session's active task to end.
        Returns the task as stored once the transaction has committed (`Enqueued.record`)."""
        params = {f"q_{name}": values.get(name) for name in ENQUEUED_COLUMNS}
        # The submitting request's trace, continued by the worker's invoke_agent span.
        if params["q_traceparent"] is None:
            params["q_traceparent"] = current_traceparent()
        enqueued = Enqueued(
            TaskRecord(
                id=values["id"],
                tenant_id=values["tenant_id"],
                session_id=values.get("session_id"),
                agent_name=values["agent_name"],
                agent_version=values["agent_version"],
                status=TaskStatus.QUEUED,
                input=values["input"],
                output=None,
                error=None,
                metadata=values.get("metadata") or {},
                usage=values.get("usage") or {},
                attempt=0,
                max_attempts=values["max_attempts"],
                lease_owner=None,
                lease_until=None,
                available_at=None,
                cancel_requested=False,
                last_seq=1,  # task.queued, below
                created_at=0.0,
                started_at=None,
                finished_at=None,
                run_seconds=0.0,
            )
        )
        statement = self._statements.enqueue_held if held else self._statements.enqueue

        def insert(conn: Connection) -> None:
            # Nothing is awaited: on SQLite it rides with the commit (a duplicate idempotency key
            # fails it, which the caller handles).
            ((enqueued.created_at, enqueued.available_at),) = statement.run(conn, params)

        await run_later(tx.conn, insert)
        await tx.emit_later(
            values["id"],
            [
                (
                    EventType.TASK_QUEUED,
                    {"agent": values["agent_name"], "version": values["agent_version"], "held": held},
                )
            ],
        )
        return enqueued

    # -- workers ---------------------------------------------------------------------------

    async def lease(self, owner: str, limit: int) -> list[Lease]:
        if limit <= 0:
            return []
        statements = self._statements
        params = {"l_limit": limit, "l_owner": owner, "l_ttl": self.lease_ttl}

        def take(conn: Connection) -> list[Any]:
            # Two statements on purpose: PostgreSQL may re-run an `IN (SELECT … LIMIT n FOR
            # UPDATE SKIP LOCKED)` subquery per row and lease more than `limit` tasks. One
            # unit of work: on SQLite one hand-off to the writer for both.
            ids = [row[0] for row in statements.lease_candidates.run(conn, params)]
            if not ids:
                return []
            return list(conn.execute(statements.lease, {**params, "l_ids": ids}))

        async with self.log.transaction() as tx:
            result = await tx.conn.run_sync(take)
            if not result:
                return []
            leases = [
                Lease(
                    r.id,
                    owner,
                    r.attempt,
                    r.tenant_id,
                    r.session_id,
                    r.agent_name,
                    r.agent_version,
                    input=r.input,
                    history=r.history or [],
                    run_seconds=float(r.run_seconds or 0.0),
                    traceparent=r.traceparent,
                    # The update leaves last_seq alone: this is the count before task.started.
                    fresh=r.last_seq <= 1,
                )
                for r in result
            ]
            for lease in leases:
                await tx.emit_later(
                    lease.task_id, [(EventType.TASK_STARTED, {"attempt": lease.attempt, "worker": owner})]
                )
        return leases

    def _owned(self, lease: Lease) -> Any:
        return and_(
            tasks.c.id == lease.task_id,
            tasks.c.lease_owner == lease.owner,
            tasks.c.attempt == lease.attempt,
            tasks.c.status == TaskStatus.RUNNING.value,
        )

    def guard(self, lease: Lease, **values: Any) -> Guard:
        """Fence an emit by the lease (and extend it), setting ``values`` on the task row too."""

        def lost() -> Exception:
            return LeaseLost(f"lease on task {lease.task_id} (attempt {lease.attempt}) was lost")

        # Built once per lease (SQL expressions are immutable): a step makes several guards.
        key = (lease.owner, lease.attempt)
        where = self._guard_where.get(key)
        if where is None:
            if len(self._guard_where) >= 1024:
                self._guard_where.clear()
            where = self._guard_where[key] = (
                tasks.c.lease_owner == lease.owner,
                tasks.c.attempt == lease.attempt,
                tasks.c.status == TaskStatus.RUNNING.value,
            )
        return Guard(where=where, values={"lease_until": self._lease_until, **values}, error=lost)

    async def fence(self, tx: Tx, lease: Lease) -> None:
        """Prove inside ``tx`` that the lease is still ours, extending it; else raise LeaseLost."""
        result = await tx.conn.execute(
            update(tasks).where(self._owned(lease)).values(lease_until=self.db.now() + self.lease_ttl)
        )
        if result.rowcount != 1:
            raise LeaseLost(f"lease on task {lease.task_id} (attempt {lease.attempt}) was lost")

    async def heartbeat(self, leases: Sequence[Lease]) -> set[str]:
        """Extend the leases; returns the ids of those still held."""
        if not leases:
            return set()
        owner = leases[0].owner
        async with self.db.transaction() as conn:
            result = await conn.execute(
                update(tasks)
                .where(
                    tasks.c.id.in_([lease.task_id for lease in leases]),
                    tasks.c.lease_owner == owner,
                    tasks.c.status == TaskStatus.RUNNING.value,
                )
                .values(lease_until=self.db.now() + self.lease_ttl)
                .returning(tasks.c.id, tasks.c.attempt)
            )
            held = {(r.id, r.attempt) for r in result}
        return {lease.task_id for lease in leases if (lease.task_id, lease.attempt) in held}

    async def cancel_requests(self, task_ids: Sequence[str]) -> set[str]:
        if not task_ids:
            return set()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(tasks.c.id).where(tasks.c.id.in_(list(task_ids)), tasks.c.cancel_requested.is_(True))
            )
            return {r.id for r in rows}

    async def release(self, lease: Lease, reason: str, *, run_seconds: float = 0.0) -> bool:
        """Give the task back without counting the attempt (graceful shutdown)."""
        async with self.log.transaction() as tx:
            result = await tx.conn.execute(
                update(tasks)
                .where(self._owned(lease))
                .values(
                    status=TaskStatus.QUEUED.value,
                    lease_owner=None,
                    lease_until=None,
                    # Back to its place in line, not the end: it had been leased, so it has
                    # already waited its turn (and holds finished steps in its journal).
                    available_at=tasks.c.created_at,
                    attempt=tasks.c.attempt - 1,
                    run_seconds=tasks.c.run_seconds + run_seconds,
                )
            )
            if result.rowcount != 1:
                return False
            await tx.emit(lease.task_id, EventType.TASK_REQUEUED, {"reason": reason, "counted": False})
            tx.after_commit(self.log.bus.notify_work)
        return True

    async def park(self, tx: Tx, lease: Lease, *, pending: Any) -> bool:
        """The task waits for approvals: give up the lease without counting the attempt and
        without a worker slot; it is queued again once every pending approval is decided.

        ``pending`` is a scalar query counting the task's undecided approvals, run *after* the
        task row is locked (the decision takes the same lock first), so a decision made while
        the step was still running cannot be missed. Returns False when nothing was pending
        and the task went straight back to the queue."""
        result = await tx.conn.execute(
            update(tasks)
            .where(self._owned(lease))
            .values(
                status=TaskStatus.AWAITING_APPROVAL.value,
                lease_owner=None,
                lease_until=None,
                available_at=None,
                attempt=tasks.c.attempt - 1,
            )
        )
        if result.rowcount != 1:
            raise LeaseLost(f"lease on task {lease.task_id} (attempt {lease.attempt}) was lost")
        if (await tx.conn.execute(pending)).scalar_one():
            return True
        await self.wake(tx, lease.task_id, "approvals decided")
        return False

    async def wake(self, tx: Tx, task_id: str, reason: str) -> bool:
        """Queue a task that awaits approval again (its approvals are all decided)."""
        result = await tx.conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.AWAITING_APPROVAL.value)
            .values(status=TaskStatus.QUEUED.value, available_at=tasks.c.created_at)
        )
        if result.rowcount != 1:
            return False
        await tx.emit(task_id, EventType.TASK_REQUEUED, {"reason": reason, "counted": False})
        tx.after_commit(self.log.bus.notify_work)
        return True

    async def retry_or_fail(
        self, lease: Lease, error: dict[str, Any], *, retryable: bool, run_seconds: float = 0.0
    ) -> TaskStatus | None:
        """An attempt failed: queue another after a backoff, or fail the task when attempts are spent."""
        async with self.log.transaction() as tx:
            row = (
                await tx.conn.execute(select(tasks.c.attempt, tasks.c.max_attempts).where(self._owned(lease)))
            ).first()
            if row is None:
                return None
            if retryable and row.attempt < row.max_attempts:
                delay = self.retry_backoff * (2 ** (row.attempt - 1))
                await tx.conn.execute(
                    update(tasks)
                    .where(self._owned(lease))
                    .values(
                        status=TaskStatus.QUEUED.value,
                        lease_owner=None,
                        lease_until=None,
                        available_at=self.db.now() + delay,
                        run_seconds=tasks.c.run_seconds + run_seconds,
                    )
                )
                await tx.emit(
                    lease.task_id,
                    EventType.TASK_REQUEUED,
                    {"reason": error.get("message", ""), "error": error, "counted": True, "retry_in": delay},
                )
                return TaskStatus.QUEUED
            await self._finish(tx, lease.task_id, TaskStatus.FAILED, error=error, run_seconds=run_seconds)
            return TaskStatus.FAILED

    async def finish(
        self,
        tx: Tx,
        lease: Lease,
        status: TaskStatus,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        run_seconds: float = 0.0,
        usage: dict[str, Any] | None = None,
        fenced: bool = False,
    ) -> None:
        """End the task inside ``tx``; ``fenced``: the transaction already proved the lease."""
        if not fenced:
            await self.fence(tx, lease)
        await self._finish(
            tx,
            lease.task_id,
            status,
            output=output,
            error=error,
            history=history,
            run_seconds=run_seconds,
            usage=usage,
        )

    async def _finish(
        self,
        tx: Tx,
        task_id: str,
        status: TaskStatus,
        *,
        output: Any = None,
        error: dict[str, Any] | None = None,
        history: list[dict[str, Any]] | None = None,
        run_seconds: float = 0.0,
        usage: dict[str, Any] | None = None,
    ) -> None:
        statements = self._statements
        params: dict[str, Any] = {
            "f_task": task_id,
            "f_status": status.value,
            "f_output": output,
            "f_error": error,
            "f_run": run_seconds,
        }
        if usage is not None:
            params["f_usage"] = usage
        ended: list[Any] = []
        released: list[bool] = []

        def finish(conn: Connection) -> None:
            # One unit with nothing read back: on SQLite it runs with the commit.
            rows = (statements.finish if usage is None else statements.finish_usage).run(conn, params)
            if not rows:
                raise LookupError(f"no task {task_id}")
            ended.append(rows[0])
            session_id = rows[0][0]
            if session_id is not None:
                if history is not None:
                    statements.session_history.run(conn, {"s_id": session_id, "s_history": history})
                released.append(self._release_next(conn, session_id))

        await run_later(tx.conn, finish)
        if status is not TaskStatus.COMPLETED:
            # A task cancelled (or failed) while it awaited approval leaves nothing pending in
            # the inbox, and nothing for the expiry sweep to retry.
            await tx.write(
                update(approvals)
                .where(approvals.c.task_id == task_id, approvals.c.status == "pending")
                .values(
                    status="expired",
                    decided_by="system:task-ended",
                    decided_at=self.db.now(),
                    decision_reason=f"the task was {status.value}",
                )
            )
        event_type = {
            TaskStatus.COMPLETED: EventType.TASK_COMPLETED,
            TaskStatus.FAILED: EventType.TASK_FAILED,
            TaskStatus.CANCELLED: EventType.TASK_CANCELLED,
        }[status]
        data: dict[str, Any] = {}
        if status is TaskStatus.COMPLETED:
            data["output"] = output
        elif error is not None:
            data["error"] = error
        await tx.emit_later(task_id, [(event_type, data)])

        def committed() -> None:
            # The unit has run by the time the transaction committed.
            _, agent_name, created_at, finished_at, total_run = ended[0]
            observe_task_end(agent_name, status.value, finished_at - created_at, total_run)
            if any(released):
                self.log.bus.notify_work()

        tx.after_commit(committed)

    def _release_next(self, conn: Connection, session_id: str) -> bool:
        """Make the session's oldest held task available if no task of the session is active;
        True if one was (part of a task's finish unit)."""
        statements = self._statements
        params = {"s_id": session_id}
        if statements.session_active.run(conn, params):
            return False
        held = statements.session_next.run(conn, params)
        if not held or held[0][1] is not None:
            return False
        statements.session_release.run(conn, {"t_id": held[0][0]})
        return True

    async def cancel_now(self, tx: Tx, task_id: str, reason: str) -> None:
        """Cancel a task no worker is running (queued or awaiting approval)."""
        await self._finish(tx, task_id, TaskStatus.CANCELLED, error={"code": "cancelled", "message": reason})

    # -- the reaper ------------------------------------------------------------------------

    async def reap(self) -> list[str]:
        """Re-queue tasks whose lease expired; fail those out of attempts; cancel those asked to."""
        now = self.db.now()
        async with self.log.transaction() as tx:
            expired = await tx.conn.execute(
                select(
                    tasks.c.id,
                    tasks.c.attempt,
                    tasks.c.max_attempts,
                    tasks.c.cancel_requested,
                    tasks.c.lease_owner,
                )
                .where(tasks.c.status == TaskStatus.RUNNING.value, tasks.c.lease_until < now)
                .order_by(tasks.c.lease_until)
                .limit(500)
                .with_for_update(skip_locked=True)
            )
            reaped = []
            for row in expired.all():
                reaped.append(row.id)
                if row.cancel_requested:
                    await self.cancel_now(tx, row.id, "cancelled while its worker was gone")
                elif row.attempt >= row.max_attempts:
                    await self._finish(
                        tx,
                        row.id,
                        TaskStatus.FAILED,
                        error={
                            "code": "lease_expired",
                            "message": f"worker {row.lease_owner} stopped answering on attempt "
                            f"{row.attempt} of {row.max_attempts}",
                        },
                    )
                else:
                    await tx.conn.execute(
                        update(tasks)
                        .where(tasks.c.id == row.id, tasks.c.status == TaskStatus.RUNNING.value)
                        .values(
                            status=TaskStatus.QUEUED.value,
                            lease_owner=None,
                            lease_until=None,
                            # Its place in line (see `release`): a dead worker's tasks resume
                            # before newer ones, not behind the whole backlog.
                            available_at=tasks.c.created_at,
                        )
                    )
                    await tx.emit(
                        row.id,
                        EventType.TASK_REQUEUED,
                        {"reason": f"lease of worker {row.lease_owner} expired", "counted": True},
                    )
            if reaped:
                tx.after_commit(self.log.bus.notify_work)
        return reaped


ENQUEUED_COLUMNS = (
    "id",
    "tenant_id",
    "session_id",
    "agent_name",
    "agent_version",
    "input",
    "metadata",
    "usage",
    "idempotency_key",
    "max_attempts",
    "traceparent",
)
"""The columns a producer gives `SqlTaskQueue.enqueue`; the queue sets the rest."""


_ENQUEUE_RETURNS = (tasks.c.created_at, tasks.c.available_at)


@dataclass(slots=True)
class Enqueued:
    """A task `SqlTaskQueue.enqueue` inserted. Its times come from the database's clock, set
    when the insert runs (on SQLite, with the commit): read `record` after the commit."""

    draft: TaskRecord
    created_at: float | None = None
    available_at: float | None = None

    @property
    def record(self) -> TaskRecord:
        if self.created_at is None:
            raise RuntimeError("the task's insert has not run yet")
        return replace(self.draft, created_at=self.created_at, available_at=self.available_at)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The queue's per-task statements, built once per dialect with bind parameters."""

    enqueue: Prepared
    enqueue_held: Prepared
    lease_candidates: Prepared
    lease: Any
    """Runs through SQLAlchemy: its ids are an expanding IN list, its history JSON to decode."""
    finish: Prepared
    finish_usage: Prepared
    session_history: Prepared
    session_active: Prepared
    session_next: Prepared
    session_release: Prepared


@per_dialect
def _statements(db: Database) -> _Statements:
    now = db.now()
    queued = {name: bindparam(f"q_{name}", type_=tasks.c[name].type) for name in ENQUEUED_COLUMNS}
    row = {
        **queued,
        "status": TaskStatus.QUEUED.value,
        "attempt": 0,
        "cancel_requested": False,
        "last_seq": 0,
        "run_seconds": 0.0,
        "created_at": now,
    }
    ended = {
        "status": bindparam("f_status"),
        "output": bindparam("f_output", type_=tasks.c.output.type),
        "error": bindparam("f_error", type_=tasks.c.error.type),
        "lease_owner": None,
        "lease_until": None,
        "available_at": None,
        "finished_at": now,
        "run_seconds": tasks.c.run_seconds + bindparam("f_run", type_=Float),
    }
    finish = (
        update(tasks)
        .where(tasks.c.id == bindparam("f_task"))
        .returning(
            tasks.c.session_id,
            tasks.c.agent_name,
            tasks.c.created_at,
            tasks.c.finished_at,
            tasks.c.run_seconds,
        )
    )
    session: Any = bindparam("s_id")
    lease_candidates = (
        select(tasks.c.id)
        .where(
            tasks.c.status == TaskStatus.QUEUED.value,
            tasks.c.available_at.is_not(None),
            tasks.c.available_at <= now,
        )
        .order_by(tasks.c.available_at, tasks.c.id)
        .limit(bindparam("l_limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    lease = (
        update(tasks)
        .where(tasks.c.id.in_(bindparam("l_ids", expanding=True)), tasks.c.status == TaskStatus.QUEUED.value)
        .values(
            status=TaskStatus.RUNNING.value,
            lease_owner=bindparam("l_owner", type_=String),
            lease_until=now + bindparam("l_ttl", type_=Float),
            attempt=tasks.c.attempt + 1,
            started_at=func.coalesce(tasks.c.started_at, now),
        )
        .returning(
            tasks.c.id,
            tasks.c.attempt,
            tasks.c.tenant_id,
            tasks.c.session_id,
            tasks.c.agent_name,
            tasks.c.agent_version,
            tasks.c.input,
            tasks.c.run_seconds,
            tasks.c.traceparent,
            tasks.c.last_seq,
            _SESSION_HISTORY,
        )
    )
    return _Statements(
        lease_candidates=Prepared(lease_candidates),
        lease=lease,
        # The database's clock, like every lease time, so a skewed API host cannot delay it.
        enqueue=Prepared(insert(tasks).values(**row, available_at=now).returning(*_ENQUEUE_RETURNS)),
        enqueue_held=Prepared(insert(tasks).values(**row, available_at=None).returning(*_ENQUEUE_RETURNS)),
        finish=Prepared(finish.values(**ended)),
        finish_usage=Prepared(finish.values(**ended, usage=bindparam("f_usage", type_=tasks.c.usage.type))),
        session_history=Prepared(
            update(sessions)
            .where(sessions.c.id == session)
            .values(history=bindparam("s_history", type_=sessions.c.history.type), updated_at=now)
        ),
        session_active=Prepared(
            select(tasks.c.id)
            .where(tasks.c.session_id == session, or_(*(tasks.c.status == s.value for s in ACTIVE_STATUSES)))
            .limit(1)
        ),
        session_next=Prepared(
            select(tasks.c.id, tasks.c.available_at)
            .where(tasks.c.session_id == session, tasks.c.status == TaskStatus.QUEUED.value)
            .order_by(tasks.c.created_at, tasks.c.id)
            .limit(1)
        ),
        session_release=Prepared(
            update(tasks).where(tasks.c.id == bindparam("t_id")).values(available_at=now)
        ),
    )
