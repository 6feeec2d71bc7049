"""What the gate decides about a call: a verdict, the rule that decided and why. A leaf module
(it imports nothing of Warden), so the policy engine and `warden.config` can both use it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    rule: str
    """Which rule decided: shown in events and the audit log."""
    reason: str


__all__ = ["Decision", "Verdict"]
