"""Event types and the event record that every stream, the console and the audit read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from warden.events.sse import sse_frame


class EventType(StrEnum):
    TASK_QUEUED = "task.queued"
    TASK_STARTED = "task.started"
    TASK_REQUEUED = "task.requeued"
    """The lease ended without a result (worker died or shut down); another attempt follows."""
    TASK_CHECKPOINT = "task.checkpoint"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    MODEL_DELTA = "model.delta"
    MODEL_MESSAGE = "model.message"
    TOOL_REQUESTED = "tool.requested"
    POLICY_DECISION = "policy.decision"
    APPROVAL_REQUIRED = "approval.required"
    APPROVAL_DECIDED = "approval.decided"
    TOOL_STARTED = "tool.started"
    TOOL_OUTPUT = "tool.output"
    TOOL_FINISHED = "tool.finished"


TERMINAL_EVENTS = frozenset({EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_CANCELLED})


@dataclass(frozen=True)
class Event:
    """One entry of a task's append-only log."""

    task_id: str
    seq: int
    """1, 2, 3 … per task, without gaps."""
    ts: float
    """Epoch seconds when the event was written."""
    type: EventType
    data: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type.value,
            "data": self.data,
        }

    @cached_property
    def wire_json(self) -> str:
        """The wire JSON, built once however many subscribers receive the event."""
        return json.dumps(self.to_wire(), separators=(",", ":"))

    @cached_property
    def sse_frame(self) -> bytes:
        """The server-sent-events frame (``id`` = seq, ``event`` = type), built once per event
        however many subscribers receive it."""
        return sse_frame(self.wire_json, event=self.type.value, id=str(self.seq))

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS
