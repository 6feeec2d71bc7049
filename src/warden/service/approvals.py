"""Deciding approvals: a human (or the expiry clock) approves or denies a waiting tool call,
optionally with edited arguments and a reason; once a task has nothing left pending it is queued
again and resumes on any worker."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, update

from warden.errors import Conflict, InvalidInput, NotFound
from warden.events.log import EventLog, Tx
from warden.events.types import EventType
from warden.governance.approvals import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalStatus,
    pending_count,
)
from warden.governance.audit import AuditEntry, AuditLog
from warden.queue.sql import SqlTaskQueue
from warden.service.keys import Principal
from warden.store.database import Database
from warden.store.schema import approvals, tasks
from warden.store.tasks import TaskStatus

MAX_LIST = 500
MAX_REASON = 2000
MAX_ARGUMENTS_BYTES = 256 * 1024
EXPIRED_BY = "system:expired"


class ApprovalService:
    def __init__(self, db: Database, log: EventLog, queue: SqlTaskQueue, audit: AuditLog) -> None:
        self.db = db
        self.log = log
        self.queue = queue
        self.audit = audit

    async def list(
        self,
        principal: Principal,
        *,
        status: ApprovalStatus | None = None,
        task_id: str | None = None,
        limit: int = 100,
    ) -> list[ApprovalRecord]:
        principal.require("approvals:read")
        query = select(approvals).where(approvals.c.tenant_id == principal.tenant_id)
        if status is not None:
            query = query.where(approvals.c.status == status.value)
        if task_id is not None:
            query = query.where(approvals.c.task_id == task_id)
        query = query.order_by(approvals.c.created_at.desc(), approvals.c.id.desc()).limit(
            max(1, min(limit, MAX_LIST))
        )
        async with self.db.read() as conn:
            return [ApprovalRecord.from_row(r) for r in await conn.execute(query)]

    async def get(self, principal: Principal, approval_id: str) -> ApprovalRecord:
        principal.require("approvals:read")
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(approvals).where(
                        approvals.c.id == approval_id, approvals.c.tenant_id == principal.tenant_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"no approval {approval_id!r}", code="approval_not_found")
        return ApprovalRecord.from_row(row)

    async def decide(
        self,
        principal: Principal,
        approval_id: str,
        decision: ApprovalDecision,
        *,
        reason: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> ApprovalRecord:
        """Decide a pending approval, once. ``arguments`` replaces the call's arguments (only
        with ``approve``); the tool's schema is checked again when the task resumes."""
        principal.require("approvals:write")
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidInput(f"reason is longer than {MAX_REASON} characters", code="reason_too_long")
        if arguments is not None:
            if decision is not ApprovalDecision.APPROVE:
                raise InvalidInput("arguments can be edited only when approving", code="invalid_decision")
            _check_arguments(arguments)
        status = ApprovalStatus.APPROVED if decision is ApprovalDecision.APPROVE else ApprovalStatus.DENIED
        async with self.log.transaction() as tx:
            await self._decide(
                tx,
                approval_id,
                tenant_id=principal.tenant_id,
                status=status,
                by=f"key:{principal.key_id}",
                reason=reason,
                arguments=arguments,
            )
        return await self.get(principal, approval_id)

    async def expire_due(self, limit: int = 100) -> int:
        """Decide approvals nobody answered in time with their default decision."""
        async with self.db.read() as conn:
            due = [
                (r.id, r.tenant_id)
                for r in await conn.execute(
                    select(approvals.c.id, approvals.c.tenant_id)
                    .where(
                        approvals.c.status == ApprovalStatus.PENDING.value,
                        approvals.c.expires_at.is_not(None),
                        approvals.c.expires_at < self.db.now(),
                    )
                    .limit(limit)
                )
            ]
        expired = 0
        for approval_id, tenant_id in due:
            try:
                async with self.log.transaction() as tx:
                    await self._decide(
                        tx,
                        approval_id,
                        tenant_id=tenant_id,
                        status=ApprovalStatus.EXPIRED,
                        by=EXPIRED_BY,
                        reason="nobody decided before the approval expired",
                        arguments=None,
                    )
                expired += 1
            except Conflict:
                pass  # decided by a person meanwhile
        return expired

    async def _decide(
        self,
        tx: Tx,
        approval_id: str,
        *,
        tenant_id: str,
        status: ApprovalStatus,
        by: str,
        reason: str | None,
        arguments: dict[str, Any] | None,
    ) -> None:
        conn = tx.conn
        row = (
            await conn.execute(
                select(
                    approvals.c.task_id, approvals.c.call_id, approvals.c.tool, approvals.c.default_decision
                ).where(approvals.c.id == approval_id, approvals.c.tenant_id == tenant_id)
            )
        ).first()
        if row is None:
            raise NotFound(f"no approval {approval_id!r}", code="approval_not_found")
        # The task row first: parking takes the same lock before it counts what is pending,
        # so a decision and a park cannot miss each other.
        task = (
            await conn.execute(select(tasks.c.status).where(tasks.c.id == row.task_id).with_for_update())
        ).first()
        result = await conn.execute(
            update(approvals)
            .where(approvals.c.id == approval_id, approvals.c.status == ApprovalStatus.PENDING.value)
            .values(
                status=status.value,
                decided_by=by,
                decided_at=self.db.now(),
                decision_reason=reason,
                edited_arguments=arguments,
            )
        )
        if result.rowcount != 1:
            raise Conflict(f"approval {approval_id} was already decided", code="already_decided")
        if task is None or TaskStatus(task.status).is_terminal:
            raise Conflict(f"the task of approval {approval_id} has ended", code="task_finished")
        effective = status.value
        if status is ApprovalStatus.EXPIRED:
            effective = "approved" if row.default_decision == ApprovalDecision.APPROVE.value else "denied"
        await tx.emit(
            row.task_id,
            EventType.APPROVAL_DECIDED,
            {
                "approval_id": approval_id,
                "call_id": row.call_id,
                "name": row.tool,
                "status": status.value,
                "decision": effective,
                "decided_by": by,
                "reason": reason,
                "edited": arguments is not None,
            },
        )
        await self.audit.append(
            conn,
            AuditEntry(
                tenant_id=tenant_id,
                actor=by,
                action="approval.decided",
                subject=row.task_id,
                outcome=effective,
                reason=reason,
                data={
                    "approval_id": approval_id,
                    "tool": row.tool,
                    "call_id": row.call_id,
                    "edited": arguments is not None,
                },
            ),
        )
        if not (await conn.execute(pending_count(row.task_id))).scalar_one():
            await self.queue.wake(tx, row.task_id, "approvals decided")


def _check_arguments(arguments: Any) -> None:
    if not isinstance(arguments, dict):
        raise InvalidInput("arguments must be a JSON object", code="invalid_arguments")
    try:
        size = len(json.dumps(arguments, allow_nan=False))
    except ValueError:
        raise InvalidInput(
            "arguments must be finite JSON (no NaN or Infinity)", code="invalid_arguments"
        ) from None
    if size > MAX_ARGUMENTS_BYTES:
        raise InvalidInput(f"arguments are larger than {MAX_ARGUMENTS_BYTES} bytes", code="invalid_arguments")


__all__ = ["ApprovalService"]
