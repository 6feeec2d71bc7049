"""Governance: the Gate every model and tool call passes through."""

from warden.governance.gate import CallContext, Decision, Gate, Verdict

__all__ = ["CallContext", "Decision", "Gate", "Verdict"]
