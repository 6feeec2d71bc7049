"""Task use cases: submit (with session and multitask rules), read, list, cancel and follow
events. Every query is scoped by the caller's tenant: another tenant's task is not found."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from warden.errors import Conflict, InvalidInput, NotFound
from warden.events.log import EventLog
from warden.events.stream import flatten, follow_batches
from warden.events.types import Event
from warden.governance.budgets import BudgetLedger
from warden.governance.pii.guard import PiiGuard, VaultReader
from warden.ids import new_id
from warden.queue.sql import SqlTaskQueue
from warden.service.agents import AgentCatalog
from warden.service.keys import Principal
from warden.service.sessions import Multitask, insert_session, session_row
from warden.store.database import Database
from warden.store.schema import tasks
from warden.store.tasks import TaskRecord, TaskStatus, get_task, list_tasks


@dataclass(frozen=True, slots=True)
class Submission:
    agent: str | None
    input: str
    session_id: str | None = None
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None


EventBatch = list[Event]
"""Events of one task, in order, that were ready at once."""


class TaskService:
    def __init__(
        self,
        db: Database,
        log: EventLog,
        queue: SqlTaskQueue,
        catalog: AgentCatalog,
        *,
        max_attempts: int,
        max_input_chars: int,
    ) -> None:
        self.db = db
        self.log = log
        self.queue = queue
        self.catalog = catalog
        self.max_attempts = max_attempts
        self.max_input_chars = max_input_chars
        self.pii: PiiGuard | None = None
        """Set by the runtime when redaction is on: ``pii:read`` callers see real values."""
        self.budgets: BudgetLedger | None = None

    async def submit(self, principal: Principal, sub: Submission) -> tuple[TaskRecord, bool]:
        """Queue a task; returns it and whether it was created (False: idempotent replay)."""
        principal.require("tasks:write")
        if len(sub.input) > self.max_input_chars:
            raise InvalidInput(
                f"input is {len(sub.input)} characters; the limit is {self.max_input_chars}",
                code="input_too_large",
            )
        existing = await self._by_idempotency_key(principal, sub.idempotency_key)
        if existing is not None:
            return existing, False
        if self.budgets:
            await self.budgets.check(
                principal.tenant_id, await self._agent_of(principal, sub), adding_task=True
            )
        try:
            record = await self._insert(principal, sub)
        except IntegrityError:
            # A concurrent submit with the same idempotency key won the race: answer with its task.
            existing = await self._by_idempotency_key(principal, sub.idempotency_key)
            if existing is None:
                raise
            return existing, False
        return record, True

    async def _agent_of(self, principal: Principal, sub: Submission) -> str:
        if sub.session_id is None:
            return sub.agent or ""
        async with self.db.read() as conn:
            return (await session_row(conn, sub.session_id, principal.tenant_id)).agent

    def _reader(self, principal: Principal, record: TaskRecord) -> VaultReader | None:
        if self.pii is None:
            return None
        return self.pii.reader(self.db, record.session_id or record.id, principal.scopes)

    async def _revealed(
        self, principal: Principal, record: TaskRecord, readers: dict[str, VaultReader | None] | None = None
    ) -> TaskRecord:
        """``record`` with its output revealed to a ``pii:read`` caller; ``readers`` shares one
        reader (one vault read) per session across a page of tasks."""
        if record.output is None or self.pii is None:
            return record
        readers = {} if readers is None else readers
        scope = record.session_id or record.id
        if scope not in readers:
            readers[scope] = self._reader(principal, record)
        reader = readers[scope]
        if reader is None:
            return record
        return replace(record, output=await reader.reveal(record.output))

    async def _by_idempotency_key(self, principal: Principal, key: str | None) -> TaskRecord | None:
        if key is None:
            return None
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(tasks.c.id).where(
                        tasks.c.tenant_id == principal.tenant_id, tasks.c.idempotency_key == key
                    )
                )
            ).first()
        return await self.get(principal, row.id) if row is not None else None

    async def _insert(self, principal: Principal, sub: Submission) -> TaskRecord:
        task_id = new_id("task")
        async with self.log.transaction() as tx:
            if sub.session_id is not None:
                session = await session_row(tx.conn, sub.session_id, principal.tenant_id, lock=True)
                agent_name = sub.agent or session.agent
                if agent_name != session.agent:
                    raise Conflict(
                        f"session {session.id} talks to agent {session.agent!r}, not {agent_name!r}",
                        code="session_agent_mismatch",
                    )
            else:
                if not sub.agent:
                    raise InvalidInput("name an agent, or a session to continue", code="agent_required")
                agent_name = sub.agent
                self.catalog.get(agent_name)
                session = await insert_session(
                    tx.conn, principal.tenant_id, agent_name, Multitask.ENQUEUE, {}
                )
            spec = self.catalog.get(agent_name)

            held = False
            if session.active_task_id is not None:
                if session.multitask is Multitask.REJECT:
                    raise Conflict(
                        f"session {session.id} is busy with task {session.active_task_id}",
                        code="session_busy",
                        details={"active_task_id": session.active_task_id},
                    )
                held = True
                if session.multitask is Multitask.INTERRUPT:
                    # Queued tasks are cancelled at once; a running one stops soon, and the new
                    # task waits for it only then.
                    held = await self._interrupt_session(tx, session.id)

            enqueued = await self.queue.enqueue(
                tx,
                {
                    "id": task_id,
                    "tenant_id": principal.tenant_id,
                    "session_id": session.id,
                    "agent_name": spec.name,
                    "agent_version": spec.version,
                    "input": sub.input,
                    "metadata": sub.metadata or {},
                    "usage": {},
                    "idempotency_key": sub.idempotency_key,
                    "max_attempts": self.max_attempts,
                },
                held=held,
            )
            if not held:
                tx.after_commit(self.log.bus.notify_work)
        return enqueued.record

    async def _interrupt_session(self, tx: Any, session_id: str) -> bool:
        """Cancel the session's unfinished tasks; True if one is still running."""
        rows = await tx.conn.execute(
            select(tasks.c.id, tasks.c.status).where(
                tasks.c.session_id == session_id,
                tasks.c.status.in_(
                    [TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.AWAITING_APPROVAL.value]
                ),
            )
        )
        still_running = False
        for row in rows.all():
            status = TaskStatus(row.status)
            still_running = still_running or status is TaskStatus.RUNNING
            await self._cancel_row(tx, row.id, status, "interrupted by a newer task in the session")
        return still_running

    async def _cancel_row(self, tx: Any, task_id: str, status: TaskStatus, reason: str) -> None:
        if status is TaskStatus.RUNNING:
            await tx.conn.execute(update(tasks).where(tasks.c.id == task_id).values(cancel_requested=True))
            tx.after_commit(lambda: self.log.bus.send_cancel(task_id))
        else:
            await self.queue.cancel_now(tx, task_id, reason)

    async def get(self, principal: Principal, task_id: str) -> TaskRecord:
        principal.require("tasks:read")
        async with self.db.read() as conn:
            record = await get_task(conn, task_id, principal.tenant_id)
        if record is None:
            raise NotFound(f"no task {task_id!r}", code="task_not_found")
        return await self._revealed(principal, record)

    async def list(self, principal: Principal, **filters: Any) -> list[TaskRecord]:
        principal.require("tasks:read")
        async with self.db.read() as conn:
            records = await list_tasks(conn, principal.tenant_id, **filters)
        readers: dict[str, VaultReader | None] = {}
        return [await self._revealed(principal, r, readers) for r in records]

    async def cancel(self, principal: Principal, task_id: str) -> TaskRecord:
        """Cancel a task; a finished task is returned unchanged."""
        principal.require("tasks:write")
        async with self.log.transaction() as tx:
            record = await get_task(tx.conn, task_id, principal.tenant_id)
            if record is None:
                raise NotFound(f"no task {task_id!r}", code="task_not_found")
            if not record.status.is_terminal and not record.cancel_requested:
                await self._cancel_row(tx, task_id, record.status, "cancelled by request")
        return await self.get(principal, task_id)

    async def events(self, principal: Principal, task_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after`` until the task ends; checks access before the first.
        Placeholders of the PII vault stay unless the caller holds ``pii:read``."""
        return flatten(await self.event_batches(principal, task_id, after))

    async def event_batches(
        self, principal: Principal, task_id: str, after: int = 0
    ) -> AsyncIterator[EventBatch]:
        """`events` in batches of what is ready at once (`follow_batches`)."""
        record = await self.get(principal, task_id)

        async def is_finished() -> bool:
            async with self.db.read() as conn:
                record = await get_task(conn, task_id)
            return record is None or record.status.is_terminal

        stream = follow_batches(self.log, task_id, after=after, is_finished=is_finished)
        reader = self._reader(principal, record)
        return stream if reader is None else _revealing(stream, reader)


async def _revealing(stream: AsyncIterator[list[Event]], reader: VaultReader) -> AsyncIterator[list[Event]]:
    async for batch in stream:
        revealed = []
        for event in batch:
            data = await reader.reveal(event.data)
            revealed.append(event if data is event.data else replace(event, data=data))
        yield revealed
