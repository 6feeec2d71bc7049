"""The Gate: the one path from the agent loop to a model or a tool (invariant 1).

This first cut enforces the agent's limits and the tool allow-list of its spec; policy rules,
approvals, PII redaction, budgets and the audit log plug in here (issue 5) without the loop
changing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from warden.config import Limits
from warden.errors import LimitExceeded
from warden.models.base import ModelProvider, ModelRequest, StreamItem, Usage
from warden.tools.base import Tool, ToolContext, ToolResult


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


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the task, its tenant and agent, and what it has used so far."""

    task_id: str
    tenant_id: str
    agent: str
    step: int
    usage: Usage
    limits: Limits


class Gate:
    """Mediates every model call and tool call of every task."""

    def check_model_call(self, ctx: CallContext) -> None:
        if ctx.step >= ctx.limits.max_steps:
            raise LimitExceeded(
                f"the agent reached its limit of {ctx.limits.max_steps} steps", code="max_steps"
            )
        if ctx.usage.total_tokens >= ctx.limits.max_tokens:
            raise LimitExceeded(
                f"the task used {ctx.usage.total_tokens} tokens, its limit is {ctx.limits.max_tokens}",
                code="max_tokens",
            )

    async def stream_model(
        self, ctx: CallContext, provider: ModelProvider, request: ModelRequest
    ) -> AsyncIterator[StreamItem]:
        self.check_model_call(ctx)
        async for item in provider.stream(request):
            yield item

    def decide_tool(self, ctx: CallContext, tool: Tool, arguments: dict[str, Any]) -> Decision:
        # Reaching here means the agent's spec lists the tool; finer rules arrive with policy.
        return Decision(Verdict.ALLOW, "agent.tools", f"{tool.name} is one of the agent's tools")

    async def call_tool(
        self, ctx: CallContext, tool: Tool, arguments: dict[str, Any], tool_ctx: ToolContext
    ) -> ToolResult:
        return await tool.call(arguments, tool_ctx)
