"""Session routes: create a multi-turn conversation, read it, list them."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from warden.api._auth import principal
from warden.api.schemas import CreateSession, ErrorBody, SessionView
from warden.governance.pii.guard import PiiGuard, VaultReader, can_read_pii
from warden.service.keys import Principal
from warden.service.sessions import SessionRecord

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])
Caller = Annotated[Principal, Depends(principal)]
_errors = {code: {"model": ErrorBody} for code in (400, 401, 403, 404, 422)}


@router.post("", status_code=201, response_model=SessionView, responses=_errors)  # type: ignore[arg-type]
async def create_session(body: CreateSession, request: Request, caller: Caller) -> SessionView:
    """Start a conversation; submit tasks with its ``session_id`` to continue it."""
    record = await request.app.state.runtime.sessions.create(
        caller, body.agent, body.multitask, body.metadata
    )
    return SessionView.of(record)


@router.get("", response_model=list[SessionView], responses=_errors)  # type: ignore[arg-type]
async def list_sessions(
    request: Request, caller: Caller, limit: int = Query(default=50, ge=1, le=500)
) -> list[SessionView]:
    return [SessionView.of(s) for s in await request.app.state.runtime.sessions.list(caller, limit)]


@router.get("/{session_id}", response_model=SessionView, responses=_errors)  # type: ignore[arg-type]
async def get_session(session_id: str, request: Request, caller: Caller) -> SessionView:
    """The session and its messages; with the PII vault on, placeholders unless ``pii:read``."""
    runtime = request.app.state.runtime
    record: SessionRecord = await runtime.sessions.get(caller, session_id)
    pii: PiiGuard | None = runtime.tasks.pii
    if pii is not None and can_read_pii(caller.scopes) and record.history:
        history = await VaultReader(pii, runtime.db, record.id).reveal(record.history)
        record = replace(record, history=history)
    return SessionView.of(record)
