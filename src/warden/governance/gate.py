"""The Gate: the one path from the agent loop to a model or a tool (invariant 1).

This first cut enforces the agent's limits and the tool allow-list of its spec; policy rules,
approvals, PII redaction, budgets and the audit log plug in here (issue 5) without the loop
changing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warden.errors import LimitExceeded
from warden.governance.decision import Decision, Verdict
from warden.models.base import ModelProvider, ModelRequest, StreamItem, Usage
from warden.tools.base import Tool, ToolContext, ToolResult

if TYPE_CHECKING:  # warden.config imports the policy's config models, which import this module
    from warden.config import Limits


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling: the task, its tenant and agent, and what it has used so far."""

    task_id: str
    tenant_id: str
    agent: str
    step: int
    usage: Usage
    limits: Limits
    tool_calls: int = 0
    """Tool calls the task made in the steps before this one."""
    cost: float | None = None
    """US dollars spent so far, when the model has a price."""


ToolPolicy = Callable[[CallContext, Tool, dict[str, Any]], Decision]
"""Decides a tool call the agent's spec allows: the policy engine, attached by the runtime."""


class Gate:
    """Mediates every model call and tool call of every task."""

    def __init__(self, policy: ToolPolicy | None = None) -> None:
        self.policy = policy

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
        if ctx.limits.max_cost is not None and ctx.cost is not None and ctx.cost >= ctx.limits.max_cost:
            raise LimitExceeded(
                f"the task spent ${ctx.cost:.4f}, its budget is ${ctx.limits.max_cost:g}", code="max_cost"
            )

    def check_tool_calls(self, ctx: CallContext, count: int) -> None:
        """Before a step's calls run: would they take the task past its tool-call budget?"""
        limit = ctx.limits.max_tool_calls
        if limit is not None and ctx.tool_calls + count > limit:
            raise LimitExceeded(
                f"the model asked for {count} more tool call(s) after {ctx.tool_calls}; "
                f"the agent's limit is {limit}",
                code="max_tool_calls",
            )

    async def stream_model(
        self, ctx: CallContext, provider: ModelProvider, request: ModelRequest
    ) -> AsyncIterator[StreamItem]:
        self.check_model_call(ctx)
        async for item in provider.stream(request):
            yield item

    def decide_tool(self, ctx: CallContext, tool: Tool, arguments: dict[str, Any]) -> Decision:
        # Reaching here means the agent's spec lists the tool; the policy decides the rest.
        if self.policy is None:
            return Decision(Verdict.ALLOW, "agent.tools", f"{tool.name} is one of the agent's tools")
        try:
            return self.policy(ctx, tool, arguments)
        except Exception as exc:  # a policy that cannot decide must not let the call through
            return Decision(
                Verdict.DENY, "policy.error", f"the policy could not decide: {type(exc).__name__}: {exc}"
            )

    async def call_tool(
        self, ctx: CallContext, tool: Tool, arguments: dict[str, Any], tool_ctx: ToolContext
    ) -> ToolResult:
        return await tool.call(arguments, tool_ctx)
