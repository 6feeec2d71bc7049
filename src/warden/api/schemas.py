"""Request and response bodies of the HTTP API (Pydantic; unknown fields are rejected)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from warden.config import AgentSpec, ModelPrice
from warden.models.base import valid_text
from warden.service.sessions import Multitask, SessionRecord
from warden.store.tasks import TaskRecord, TaskStatus

_ID = r"^[a-z]{1,8}_[0-9a-z]{26}$"
MetadataValue = str | int | float | bool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _check_metadata(value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
    if len(value) > 64:
        raise ValueError("at most 64 metadata entries")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError("metadata keys are at most 64 characters")
        if isinstance(item, str) and len(item) > 2048:
            raise ValueError("metadata values are at most 2048 characters")
        if valid_text(key) is not key or (isinstance(item, str) and valid_text(item) is not item):
            # JSON's \ud800 escapes parse into lone surrogates, which no response could encode.
            raise ValueError("metadata must be valid Unicode text (no lone surrogates)")
    return value


class SubmitTask(_Body):
    agent: str | None = Field(default=None, max_length=64, description="Agent name; optional with a session.")
    input: str = Field(min_length=1, description="What the agent should do.")
    session_id: str | None = Field(default=None, pattern=_ID, description="Continue this session.")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    _metadata = field_validator("metadata")(_check_metadata)


class TaskAccepted(BaseModel):
    id: str
    status: TaskStatus
    session_id: str | None
    events_url: str


class Timings(BaseModel):
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    queue_wait_ms: float | None
    duration_ms: float | None
    run_seconds: float


class TaskView(BaseModel):
    id: str
    status: TaskStatus
    agent: str
    agent_version: str
    session_id: str | None
    input: str
    output: Any
    error: dict[str, Any] | None
    metadata: dict[str, Any]
    usage: dict[str, Any]
    """``by_model`` (input/output tokens per model) and ``total``."""
    attempt: int
    max_attempts: int
    cancel_requested: bool
    last_seq: int
    timings: Timings

    @classmethod
    def of(cls, t: TaskRecord) -> TaskView:
        total_in = sum(int(u.get("input_tokens", 0)) for u in t.usage.values())
        total_out = sum(int(u.get("output_tokens", 0)) for u in t.usage.values())
        wait = (t.started_at - t.created_at) * 1000 if t.started_at is not None else None
        duration = (t.finished_at - t.started_at) * 1000 if t.finished_at and t.started_at else None
        return cls(
            id=t.id,
            status=t.status,
            agent=t.agent_name,
            agent_version=t.agent_version,
            session_id=t.session_id,
            input=t.input,
            output=t.output,
            error=t.error,
            metadata=t.metadata,
            usage={
                "by_model": t.usage,
                "total": {
                    "input_tokens": total_in,
                    "output_tokens": total_out,
                    "total_tokens": total_in + total_out,
                },
            },
            attempt=t.attempt,
            max_attempts=t.max_attempts,
            cancel_requested=t.cancel_requested,
            last_seq=t.last_seq,
            timings=Timings(
                created_at=iso(t.created_at),
                started_at=iso(t.started_at),
                finished_at=iso(t.finished_at),
                queue_wait_ms=round(wait, 3) if wait is not None else None,
                duration_ms=round(duration, 3) if duration is not None else None,
                run_seconds=round(t.run_seconds, 3),
            ),
        )


class TaskPage(BaseModel):
    items: list[TaskView]
    next_cursor: str | None


class CreateSession(_Body):
    agent: str = Field(max_length=64)
    multitask: Multitask = Multitask.ENQUEUE
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    _metadata = field_validator("metadata")(_check_metadata)


class SessionView(BaseModel):
    id: str
    agent: str
    multitask: Multitask
    active_task_id: str | None
    messages: list[dict[str, Any]]
    metadata: dict[str, Any]
    created_at: str | None
    updated_at: str | None

    @classmethod
    def of(cls, s: SessionRecord) -> SessionView:
        return cls(
            id=s.id,
            agent=s.agent,
            multitask=s.multitask,
            active_task_id=s.active_task_id,
            messages=s.history,
            metadata=s.metadata,
            created_at=iso(s.created_at),
            updated_at=iso(s.updated_at),
        )


class AgentView(BaseModel):
    name: str
    version: str
    description: str
    model: str
    tools: list[str]
    limits: dict[str, Any]
    versions: list[str] | None = None
    price: dict[str, float] | None = None
    """The model's price in US dollars per million tokens (``input_per_mtok``, ``output_per_mtok``),
    when ``warden.yaml`` gives one: the console estimates a task's cost with it."""

    @classmethod
    def of(
        cls, spec: AgentSpec, versions: list[str] | None = None, price: ModelPrice | None = None
    ) -> AgentView:
        return cls(
            name=spec.name,
            version=spec.version,
            description=spec.description,
            model=spec.model,
            tools=spec.tools,
            limits=spec.limits.model_dump(),
            versions=versions,
            price=price.model_dump() if price is not None else None,
        )


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
