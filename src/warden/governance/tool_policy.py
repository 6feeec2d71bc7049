"""The policy the Gate asks about tool calls: the operator's rules (warden.yaml, then policy
files), then Warden's own rule for its contained tools, then the defaults (side effects: ask)."""

from __future__ import annotations

from typing import Any

from warden.governance.decision import Decision
from warden.governance.gate import CallContext, ToolPolicy
from warden.governance.policy.config import PolicyConfig, Rule
from warden.governance.policy.engine import PolicyRequest
from warden.governance.policy.store import PolicyStore
from warden.tools.base import Tool

CONTAINED_TOOLS = ("python", "shell", "read_file", "write_file", "notes_write")
"""Warden's built-in tools with side effects that stay inside the task's own sandbox or notes
folder; an operator rule that names them comes first and wins."""

CONTAINED_RULE = Rule(
    name="warden.contained-tools",
    decision="allow",
    tools=list(CONTAINED_TOOLS),
    reason="Warden's own tool: it acts only inside the task's sandbox or notes folder",
)


def build_policy(config: PolicyConfig) -> PolicyStore:
    """The policy for ``config``: files read and validated now (errors carry their line), then
    reloaded by `PolicyStore.watch` when they change."""
    return PolicyStore(config, extra_rules=[CONTAINED_RULE])


def tool_policy(policy: PolicyStore) -> ToolPolicy:
    def decide(ctx: CallContext, tool: Tool, arguments: dict[str, Any]) -> Decision:
        return policy.decide(PolicyRequest.for_call(ctx, tool, arguments))

    return decide


__all__ = ["CONTAINED_RULE", "CONTAINED_TOOLS", "build_policy", "tool_policy"]
