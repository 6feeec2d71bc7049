"""Session routes: create a multi-turn conversation, read it, list them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from warden.api._auth import principal
from warden.api.schemas import CreateSession, ErrorBody, SessionView
from warden.service.keys import Principal

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
    return SessionView.of(await request.app.state.runtime.sessions.get(caller, session_id))
