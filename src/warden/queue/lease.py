"""A lease: the right of one worker to run one attempt of one task until it expires."""

from __future__ import annotations

from dataclasses import dataclass

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


class LeaseLost(WardenError):
    """The lease expired and another attempt took over: this runner must stop writing."""

    code = "lease_lost"
    http_status = 409
