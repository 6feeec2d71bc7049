"""Approvals: tool calls a policy answered `ask` wait for a human. One row per call (task, journal
key), written in the transaction that parks the task; decided once, by a conditional update."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.ids import new_id
from warden.store.schema import approvals


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    """Nobody decided in time; ``default_decision`` applied."""


class ApprovalDecision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    id: str
    tenant_id: str
    task_id: str
    session_id: str | None
    agent_name: str
    step: int
    call_key: str
    call_id: str
    tool: str
    arguments: dict[str, Any]
    """As the model gave them (placeholders, never PII)."""
    rule: str
    reason: str
    status: ApprovalStatus
    default_decision: ApprovalDecision
    decision_reason: str | None
    edited_arguments: dict[str, Any] | None
    """What the approver changed the arguments to, if anything."""
    decided_by: str | None
    decided_at: float | None
    created_at: float
    expires_at: float | None

    @property
    def allows(self) -> bool:
        """Decided, and the call may run."""
        if self.status is ApprovalStatus.APPROVED:
            return True
        return self.status is ApprovalStatus.EXPIRED and self.default_decision is ApprovalDecision.APPROVE

    @property
    def decided(self) -> bool:
        return self.status is not ApprovalStatus.PENDING

    @classmethod
    def from_row(cls, row: Any) -> ApprovalRecord:
        m = row._mapping
        return cls(
            id=m["id"],
            tenant_id=m["tenant_id"],
            task_id=m["task_id"],
            session_id=m["session_id"],
            agent_name=m["agent_name"],
            step=m["step"],
            call_key=m["call_key"],
            call_id=m["call_id"],
            tool=m["tool"],
            arguments=dict(m["arguments"] or {}),
            rule=m["rule"],
            reason=m["reason"],
            status=ApprovalStatus(m["status"]),
            default_decision=ApprovalDecision(m["default_decision"]),
            decision_reason=m["decision_reason"],
            edited_arguments=m["edited_arguments"],
            decided_by=m["decided_by"],
            decided_at=m["decided_at"],
            created_at=m["created_at"],
            expires_at=m["expires_at"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "session_id": self.session_id,
            "agent": self.agent_name,
            "step": self.step,
            "call_id": self.call_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "rule": self.rule,
            "reason": self.reason,
            "status": self.status.value,
            "default_decision": self.default_decision.value,
            "decision_reason": self.decision_reason,
            "edited_arguments": self.edited_arguments,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


async def approvals_for_task(conn: AsyncConnection, task_id: str) -> dict[str, ApprovalRecord]:
    """Every approval of a task, by the journal key of its call."""
    rows = await conn.execute(select(approvals).where(approvals.c.task_id == task_id))
    return {r.call_key: ApprovalRecord.from_row(r) for r in rows}


def pending_count(task_id: str) -> Select[int]:
    """How many of the task's approvals are undecided."""
    return (
        select(func.count())
        .select_from(approvals)
        .where(approvals.c.task_id == task_id, approvals.c.status == ApprovalStatus.PENDING.value)
    )


async def insert_pending(
    conn: Any,
    *,
    tenant_id: str,
    task_id: str,
    session_id: str | None,
    agent_name: str,
    step: int,
    call_key: str,
    call_id: str,
    tool: str,
    arguments: dict[str, Any],
    rule: str,
    reason: str,
    default_decision: ApprovalDecision,
    now: ColumnElement[float] | float,
    timeout: float | None,
) -> str:
    """Record a call waiting for a human (inside the transaction that parks its task). ``now``
    is the database's clock, so expiry does not depend on any worker's."""
    approval_id = new_id("apr")
    await conn.execute(
        insert(approvals).values(
            id=approval_id,
            tenant_id=tenant_id,
            task_id=task_id,
            session_id=session_id,
            agent_name=agent_name,
            step=step,
            call_key=call_key,
            call_id=call_id,
            tool=tool,
            arguments=arguments,
            rule=rule,
            reason=reason,
            status=ApprovalStatus.PENDING.value,
            default_decision=default_decision.value,
            created_at=now,
            expires_at=now + timeout if timeout else None,
        )
    )
    return approval_id


__all__ = [
    "ApprovalDecision",
    "ApprovalRecord",
    "ApprovalStatus",
    "approvals_for_task",
    "insert_pending",
    "pending_count",
]
