"""Audit routes: the caller's tenant's audit log, newest first, and the verification of its
hash chain. Both need the ``audit:read`` scope."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from warden.api._auth import principal
from warden.api.schemas import ErrorBody, iso
from warden.errors import InvalidInput
from warden.governance.audit import AuditLog, AuditRecord
from warden.service.keys import Principal

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Caller = Annotated[Principal, Depends(principal)]
_errors: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 403, 422)}
SCOPE = "audit:read"


class AuditEntryView(BaseModel):
    seq: int
    time: str
    actor: str
    action: str
    subject: str | None
    outcome: str | None
    rule: str | None
    reason: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEntryView:
        return cls(
            seq=record.seq,
            time=iso(record.ts) or "",
            actor=record.actor,
            action=record.action,
            subject=record.subject,
            outcome=record.outcome,
            rule=record.rule,
            reason=record.reason,
            data=record.data,
            prev_hash=record.prev_hash,
            hash=record.hash,
        )


class AuditPage(BaseModel):
    items: list[AuditEntryView]
    next_cursor: str | None


class AuditVerification(BaseModel):
    ok: bool
    entries: int
    """Entries found sound (up to the first problem)."""
    first_bad_seq: int | None
    problem: str | None


def _audit(request: Request) -> AuditLog:
    """The runtime's audit log if it has one, else one over its database (made once)."""
    runtime = request.app.state.runtime
    found = getattr(runtime, "audit", None)
    if isinstance(found, AuditLog):
        return found
    state = request.app.state
    if not isinstance(getattr(state, "audit_log", None), AuditLog):
        state.audit_log = AuditLog.from_env(runtime.db)
    log: AuditLog = state.audit_log
    return log


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        (seq,) = json.loads(base64.urlsafe_b64decode(value.encode()))
        return int(seq)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput("cursor is not one this API returned", code="invalid_cursor") from exc


@router.get("", response_model=AuditPage, responses=_errors)
async def list_audit(
    request: Request,
    caller: Caller,
    action: str | None = Query(default=None, max_length=64),
    subject: str | None = Query(default=None, max_length=255),
    since: datetime | None = Query(default=None, description="From this time on (ISO 8601; UTC if naive)."),
    until: datetime | None = Query(default=None, description="Before this time (ISO 8601; UTC if naive)."),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=200),
) -> AuditPage:
    """Your tenant's audit entries, newest first; pass ``next_cursor`` back as ``cursor``."""
    caller.require(SCOPE)
    items = await _audit(request).list(
        caller.tenant_id,
        action=action,
        subject=subject,
        since=_epoch(since),
        until=_epoch(until),
        before_seq=_cursor(cursor),
        limit=limit,
    )
    next_cursor = None
    if len(items) == limit:
        next_cursor = base64.urlsafe_b64encode(json.dumps([items[-1].seq]).encode()).decode()
    return AuditPage(items=[AuditEntryView.of(r) for r in items], next_cursor=next_cursor)


EXPORT_PAGE = 500


@router.get(
    "/export",
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}, **_errors},
)
async def export_audit(
    request: Request,
    caller: Caller,
    after_seq: int = Query(default=0, ge=0, le=2**53, description="Entries with a greater seq."),
    action: str | None = Query(default=None, max_length=64),
    since: datetime | None = Query(default=None),
    until: datetime | None = Query(default=None),
) -> StreamingResponse:
    """Your tenant's audit entries oldest first as JSON lines (one entry, with its hashes, per
    line), streamed a page at a time: an export can be checked offline against the chain."""
    caller.require(SCOPE)
    audit = _audit(request)
    first = await audit.list(
        caller.tenant_id,
        action=action,
        since=_epoch(since),
        until=_epoch(until),
        after_seq=after_seq,
        limit=EXPORT_PAGE,
    )

    async def lines() -> AsyncIterator[bytes]:
        page = first
        while page:
            yield "".join(AuditEntryView.of(r).model_dump_json() + "\n" for r in page).encode()
            if len(page) < EXPORT_PAGE:
                return
            page = await audit.list(
                caller.tenant_id,
                action=action,
                since=_epoch(since),
                until=_epoch(until),
                after_seq=page[-1].seq,
                limit=EXPORT_PAGE,
            )

    return StreamingResponse(
        lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"}
    )


@router.get("/verify", response_model=AuditVerification, responses=_errors)
async def verify_audit(request: Request, caller: Caller) -> AuditVerification:
    """Walk your tenant's hash chain and report the first entry that was edited, removed or
    moved. It cannot tell a cut-off tail if the chain head was cut back with it (see
    docs/security.md)."""
    caller.require(SCOPE)
    result = await _audit(request).verify(caller.tenant_id)
    return AuditVerification(
        ok=result.ok, entries=result.entries, first_bad_seq=result.first_bad_seq, problem=result.problem
    )
