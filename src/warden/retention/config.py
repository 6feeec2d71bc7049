"""The ``retention:`` section of warden.yaml: how long finished work is kept. Durations are
seconds or text such as ``90d``, ``12h``, ``30m``; unset keeps things forever."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``30d`` / ``12h`` / ``45m`` / ``10s`` / ``2w`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '30d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None:
            raise ValueError(f"{value!r} is not a duration: use seconds or text like '30d', '12h', '45m'")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError("a duration is a number of seconds or text like '30d'")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class RetentionConfig(BaseModel):
    """Time-to-live of finished work. Only tasks in a terminal status (completed, failed,
    cancelled) and what belongs to them are ever deleted, counted from when they finished.

    The audit log is never pruned: it is a hash chain, and deleting entries would break the
    chain that ``warden audit verify`` checks. There is deliberately no setting for it."""

    model_config = ConfigDict(extra="forbid")

    tasks: float | None = None
    """Finished tasks, with their events, checkpoints, journal and approvals."""
    events: float | None = None
    """Events of finished tasks (the task row, its output and usage stay)."""
    checkpoints: float | None = None
    """Checkpoints and journal entries of finished tasks (only a running task resumes from them)."""
    snapshots: float | None = None
    """Sandbox snapshots (rows and their files), counted from when they were taken."""
    interval: float = 3600.0
    """How often worker processes prune when any TTL is set."""
    batch_size: int = Field(default=500, ge=1, le=100_000)
    """Rows deleted per transaction, so pruning never holds long locks."""

    @model_validator(mode="before")
    @classmethod
    def _no_audit(cls, data: Any) -> Any:
        if isinstance(data, dict) and "audit" in data:
            raise ValueError(
                "the audit log is never pruned: it is a hash chain, and removing entries would "
                "break verification (remove retention.audit)"
            )
        return data

    @field_validator("tasks", "events", "checkpoints", "snapshots", "interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.tasks, self.events, self.checkpoints, self.snapshots))
