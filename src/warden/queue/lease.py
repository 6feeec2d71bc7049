"""A lease: the right of one worker to run one attempt of one task until it expires."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warden.errors import WardenError


@dataclass(frozen=True, slots=True)
class Lease:
    task_id: str
    owner: str
    """The worker holding it."""
    attempt: int
    """Which attempt this is (1-based); with ``owner`` it fences writes of a stale runner."""
    tenant_id: str
    session_id: str | None
    agent_name: str
    agent_version: str
    # What the worker needs to start, read by the statement that takes the lease (one round
    # trip instead of three reads after it).
    input: str = ""
    """The task's input text."""
    history: list[dict[str, Any]] | None = field(default=None, compare=False)
    """The session's earlier turns (message dicts) when the lease was taken (not part of the
    lease's identity: leases stay hashable)."""
    run_seconds: float = 0.0
    """Run time spent by earlier attempts (against the agent's timeout)."""
    traceparent: str | None = None
    """W3C traceparent of the request that submitted the task."""
    fresh: bool = False
    """No attempt of the task ever started: every attempt emits ``task.started`` with its lease,
    so a task whose only event is ``task.queued`` has no journal, checkpoints or approvals, and
    the loop need not read them."""


class LeaseLost(WardenError):
    """The lease expired and another attempt took over: this runner must stop writing."""

    code = "lease_lost"
    http_status = 409
