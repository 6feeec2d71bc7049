"""Task routes: submit, read, list, cancel, and the live event stream over SSE and WebSocket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, WebSocket, WebSocketDisconnect

from warden.api._auth import principal, stream_principal, ws_principal
from warden.api._sse import EventStreamResponse
from warden.api.schemas import ErrorBody, SubmitTask, TaskAccepted, TaskPage, TaskView
from warden.errors import InvalidInput, WardenError
from warden.service.keys import Principal
from warden.service.tasks import Submission
from warden.store.tasks import TaskStatus

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
Caller = Annotated[Principal, Depends(principal)]
StreamCaller = Annotated[Principal, Depends(stream_principal)]
_errors: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 422)
}


def _runtime(request: Request) -> Any:
    return request.app.state.runtime


@router.post("", status_code=202, response_model=TaskAccepted, responses=_errors)
async def submit_task(body: SubmitTask, request: Request, response: Response, caller: Caller) -> TaskAccepted:
    """Queue a task and return its id at once; watch it at ``events_url``."""
    task, created = await _runtime(request).tasks.submit(
        caller,
        Submission(
            agent=body.agent,
            input=body.input,
            session_id=body.session_id,
            metadata=body.metadata,
            idempotency_key=body.idempotency_key,
        ),
    )
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/tasks/{task.id}"
    # A new task is reported as accepted, `queued`: a worker may already have leased it by the
    # time it is read back, and the reply must not depend on that race. A repeat (idempotency
    # key) reports the first task's current status.
    status = TaskStatus.QUEUED if created else task.status
    return TaskAccepted(
        id=task.id, status=status, session_id=task.session_id, events_url=f"/v1/tasks/{task.id}/events"
    )


def _cursor(value: str | None) -> tuple[float, str] | None:
    if value is None:
        return None
    try:
        created, task_id = json.loads(base64.urlsafe_b64decode(value.encode()))
        return float(created), str(task_id)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise InvalidInput("cursor is not one this API returned", code="invalid_cursor") from exc


@router.get("", response_model=TaskPage, responses=_errors)
async def list_tasks(
    request: Request,
    caller: Caller,
    status: TaskStatus | None = None,
    agent: str | None = Query(default=None, max_length=64),
    session: str | None = Query(default=None, max_length=64),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=200),
) -> TaskPage:
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    items = await _runtime(request).tasks.list(
        caller, status=status, agent=agent, session_id=session, before=_cursor(cursor), limit=limit
    )
    next_cursor = None
    if len(items) == limit:
        last = items[-1]
        next_cursor = base64.urlsafe_b64encode(json.dumps([last.created_at, last.id]).encode()).decode()
    return TaskPage(items=[TaskView.of(t) for t in items], next_cursor=next_cursor)


@router.get("/{task_id}", response_model=TaskView, responses=_errors)
async def get_task(task_id: str, request: Request, caller: Caller) -> TaskView:
    """Status, output, error, usage per model and timings."""
    return TaskView.of(await _runtime(request).tasks.get(caller, task_id))


@router.post("/{task_id}/cancel", status_code=202, response_model=TaskView, responses=_errors)
async def cancel_task(task_id: str, request: Request, caller: Caller) -> TaskView:
    """Ask the task to stop; a running task stops within a second. A finished task is unchanged."""
    return TaskView.of(await _runtime(request).tasks.cancel(caller, task_id))


MAX_SEQ = 2**53
"""Larger resume points than any real seq are clamped, so no database sees an overflow."""


def _resume_point(after: int | None, last_event_id: str | None) -> int:
    point = after or 0
    if last_event_id:
        try:
            point = max(point, int(last_event_id))
        except ValueError as exc:
            raise InvalidInput(
                "Last-Event-ID must be an event seq (an integer)", code="invalid_last_event_id"
            ) from exc
    return min(max(point, 0), MAX_SEQ)


@router.get(
    "/{task_id}/events",
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}, **_errors},
)
async def task_events(
    task_id: str,
    request: Request,
    caller: StreamCaller,
    after: int | None = Query(
        default=None, ge=0, le=MAX_SEQ, description="Send events with seq greater than this."
    ),
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID", max_length=20),
) -> EventStreamResponse:
    """Every event after ``after`` (or ``Last-Event-ID``), live, until the task ends.
    Each frame has ``id: <seq>``, ``event: <type>`` and the event's JSON as data."""
    batches = await _runtime(request).tasks.event_batches(
        caller, task_id, _resume_point(after, last_event_id)
    )

    async def frames() -> AsyncIterator[bytes]:
        async for batch in batches:
            # Events that queued up while this stream was busy go out in one write.
            yield batch[0].sse_frame if len(batch) == 1 else b"".join(e.sse_frame for e in batch)
            if batch[-1].is_terminal:
                # The stream's teardown comes next: let the task's other subscribers get this
                # frame first (with 1,000 of them, the teardowns added up before the last one).
                await asyncio.sleep(0)

    return EventStreamResponse(frames(), streams=request.app.state.streams)


@router.websocket("/{task_id}/stream")
async def task_stream(websocket: WebSocket, task_id: str, after: int = 0) -> None:
    """The same events as JSON text frames; closes with code 1000 after the terminal event."""
    try:
        caller = await ws_principal(websocket)
        events = await websocket.app.state.runtime.tasks.events(caller, task_id, min(max(after, 0), MAX_SEQ))
    except WardenError as exc:
        await websocket.accept()
        await websocket.send_json({"error": exc.to_dict()})
        await websocket.close(code=4000 + exc.http_status % 1000)
        return
    await websocket.accept()
    try:
        async for event in events:
            await websocket.send_text(event.wire_json)
        await websocket.close(code=1000)
    except WebSocketDisconnect:
        return
