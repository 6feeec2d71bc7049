"""Task records: statuses, the row as a dataclass, and the reads the API needs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.store.schema import tasks


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({TaskStatus.RUNNING, TaskStatus.AWAITING_APPROVAL})


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    tenant_id: str
    session_id: str | None
    agent_name: str
    agent_version: str
    status: TaskStatus
    input: str
    output: Any
    error: dict[str, Any] | None
    metadata: dict[str, Any]
    usage: dict[str, Any]
    """Per model: ``{model: {input_tokens, output_tokens, calls}}``."""
    attempt: int
    max_attempts: int
    lease_owner: str | None
    lease_until: float | None
    available_at: float | None
    cancel_requested: bool
    last_seq: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    run_seconds: float

    @classmethod
    def from_row(cls, row: Row[Any]) -> TaskRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            tenant_id=m["tenant_id"],
            session_id=m["session_id"],
            agent_name=m["agent_name"],
            agent_version=m["agent_version"],
            status=TaskStatus(m["status"]),
            input=m["input"],
            output=m["output"],
            error=m["error"],
            metadata=m["metadata"] or {},
            usage=m["usage"] or {},
            attempt=m["attempt"],
            max_attempts=m["max_attempts"],
            lease_owner=m["lease_owner"],
            lease_until=m["lease_until"],
            available_at=m["available_at"],
            cancel_requested=bool(m["cancel_requested"]),
            last_seq=m["last_seq"],
            created_at=m["created_at"],
            started_at=m["started_at"],
            finished_at=m["finished_at"],
            run_seconds=m["run_seconds"] or 0.0,
        )


async def get_task(conn: AsyncConnection, task_id: str, tenant_id: str | None = None) -> TaskRecord | None:
    """The task, or None; with ``tenant_id`` another tenant's task is None too."""
    query = select(tasks).where(tasks.c.id == task_id)
    if tenant_id is not None:
        query = query.where(tasks.c.tenant_id == tenant_id)
    row = (await conn.execute(query)).first()
    return TaskRecord.from_row(row) if row is not None else None


def list_query(
    tenant_id: str,
    *,
    status: TaskStatus | None = None,
    agent: str | None = None,
    session_id: str | None = None,
    before: tuple[float, str] | None = None,
    limit: int = 50,
) -> Select[Any]:
    """Newest first; ``before`` is the (created_at, id) of the last row of the previous page."""
    query = select(tasks).where(tasks.c.tenant_id == tenant_id)
    if status is not None:
        query = query.where(tasks.c.status == status.value)
    if agent is not None:
        query = query.where(tasks.c.agent_name == agent)
    if session_id is not None:
        query = query.where(tasks.c.session_id == session_id)
    if before is not None:
        created, task_id = before
        query = query.where(
            or_(tasks.c.created_at < created, and_(tasks.c.created_at == created, tasks.c.id < task_id))
        )
    return query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit)


async def list_tasks(conn: AsyncConnection, tenant_id: str, **filters: Any) -> list[TaskRecord]:
    rows = await conn.execute(list_query(tenant_id, **filters))
    return [TaskRecord.from_row(r) for r in rows]
