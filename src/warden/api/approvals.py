"""Approval routes: the inbox of tool calls waiting for a human, and deciding one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from warden.api._auth import principal
from warden.api.schemas import ErrorBody
from warden.governance.approvals import ApprovalDecision, ApprovalStatus
from warden.models.base import valid_value
from warden.service.keys import Principal

router = APIRouter(prefix="/v1/approvals", tags=["approvals"])
Caller = Annotated[Principal, Depends(principal)]
_errors: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422)
}


class ApprovalView(BaseModel):
    id: str
    task_id: str
    session_id: str | None
    agent: str
    step: int
    call_id: str
    tool: str
    arguments: dict[str, Any]
    rule: str
    reason: str
    status: ApprovalStatus
    default_decision: ApprovalDecision
    decision_reason: str | None
    edited_arguments: dict[str, Any] | None
    decided_by: str | None
    decided_at: float | None
    created_at: float
    expires_at: float | None


class ApprovalPage(BaseModel):
    items: list[ApprovalView]


class Decide(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: str | None = Field(default=None, max_length=2000)
    arguments: dict[str, Any] | None = None
    """Replaces the call's arguments (approve only); checked against the tool's schema on resume."""

    @field_validator("arguments")
    @classmethod
    def _text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and valid_value(value) is not value:
            # JSON's \ud800 escapes parse into lone surrogates, which no response could encode.
            raise ValueError("arguments must be valid Unicode text (no lone surrogates)")
        return value


@router.get("", response_model=ApprovalPage, responses=_errors)
async def list_approvals(
    request: Request,
    caller: Caller,
    status: ApprovalStatus | None = Query(default=None, description="pending, approved, denied or expired"),
    task_id: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=100, ge=1, le=500),
) -> ApprovalPage:
    records = await request.app.state.runtime.approvals.list(
        caller, status=status, task_id=task_id, limit=limit
    )
    return ApprovalPage(items=[ApprovalView(**r.to_dict()) for r in records])


@router.get("/{approval_id}", response_model=ApprovalView, responses=_errors)
async def get_approval(approval_id: str, request: Request, caller: Caller) -> ApprovalView:
    record = await request.app.state.runtime.approvals.get(caller, approval_id)
    return ApprovalView(**record.to_dict())


@router.post("/{approval_id}", response_model=ApprovalView, responses=_errors)
async def decide_approval(approval_id: str, body: Decide, request: Request, caller: Caller) -> ApprovalView:
    """Approve or deny once; a second decision is 409 ``already_decided``. The task resumes on
    any worker when none of its approvals is pending."""
    record = await request.app.state.runtime.approvals.decide(
        caller, approval_id, ApprovalDecision(body.decision), reason=body.reason, arguments=body.arguments
    )
    return ApprovalView(**record.to_dict())
