"""Sessions: multi-turn conversations with one agent, at most one active task at a time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.errors import NotFound
from warden.governance.pii.guard import PiiGuard
from warden.ids import new_id
from warden.service.agents import AgentCatalog
from warden.service.keys import Principal
from warden.store.database import Database, wall_clock, write
from warden.store.prepared import Prepared
from warden.store.schema import sessions, tasks
from warden.store.tasks import TaskStatus


class Multitask(StrEnum):
    """What a new task on a busy session does (invariant 4)."""

    REJECT = "reject"
    ENQUEUE = "enqueue"
    INTERRUPT = "interrupt"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    tenant_id: str
    agent: str
    multitask: Multitask
    history: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: float
    updated_at: float
    active_task_id: str | None = None


BUSY = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.AWAITING_APPROVAL.value)


async def session_row(
    conn: AsyncConnection, session_id: str, tenant_id: str, *, lock: bool = False
) -> SessionRecord:
    query = select(sessions).where(sessions.c.id == session_id, sessions.c.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"no session {session_id!r}", code="session_not_found")
    busy = (
        await conn.execute(
            select(tasks.c.id)
            .where(tasks.c.session_id == session_id, tasks.c.status.in_(BUSY))
            .order_by(tasks.c.created_at)
            .limit(1)
        )
    ).first()
    return SessionRecord(
        id=row.id,
        tenant_id=row.tenant_id,
        agent=row.agent_name,
        multitask=Multitask(row.multitask),
        history=row.history or [],
        metadata=row.metadata or {},
        created_at=row.created_at,
        updated_at=row.updated_at,
        active_task_id=busy.id if busy is not None else None,
    )


async def insert_session(
    conn: AsyncConnection, tenant_id: str, agent: str, multitask: Multitask, metadata: dict[str, Any]
) -> SessionRecord:
    now = wall_clock()
    record = SessionRecord(new_id("ses"), tenant_id, agent, multitask, [], metadata, now, now)
    # Nothing is read back: on SQLite the insert rides with the transaction's next unit.
    await write(
        conn,
        _INSERT_SESSION,
        {
            "id": record.id,
            "tenant_id": tenant_id,
            "agent_name": agent,
            "multitask": multitask.value,
            "history": [],
            "metadata": metadata,
            "created_at": now,
            "updated_at": now,
        },
    )
    return record


_INSERT_SESSION = Prepared(
    sessions.insert(),
    column_keys=(
        "id",
        "tenant_id",
        "agent_name",
        "multitask",
        "history",
        "metadata",
        "created_at",
        "updated_at",
    ),
)


class SessionService:
    def __init__(self, db: Database, catalog: AgentCatalog) -> None:
        self.db = db
        self.catalog = catalog
        self.pii: PiiGuard | None = None
        """Set by the runtime when redaction is on: ``pii:read`` callers see real values."""

    async def create(
        self, principal: Principal, agent: str, multitask: Multitask, metadata: dict[str, Any]
    ) -> SessionRecord:
        principal.require("tasks:write")
        self.catalog.get(agent)
        async with self.db.transaction() as conn:
            return await insert_session(conn, principal.tenant_id, agent, multitask, metadata)

    async def get(self, principal: Principal, session_id: str) -> SessionRecord:
        """The session; with the PII vault on, its messages hold placeholders unless the caller
        has ``pii:read``."""
        principal.require("tasks:read")
        async with self.db.read() as conn:
            record = await session_row(conn, session_id, principal.tenant_id)
        reader = self.pii.reader(self.db, record.id, principal.scopes) if self.pii is not None else None
        if reader is None or not record.history:
            return record
        return replace(record, history=await reader.reveal(record.history))

    async def list(self, principal: Principal, limit: int = 50) -> list[SessionRecord]:
        principal.require("tasks:read")
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(sessions.c.id)
                .where(sessions.c.tenant_id == principal.tenant_id)
                .order_by(sessions.c.created_at.desc())
                .limit(limit)
            )
            return [await session_row(conn, r.id, principal.tenant_id) for r in rows.all()]
