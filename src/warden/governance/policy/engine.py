"""The policy engine: rules compiled once, then `PolicyEngine.decide` answers allow, deny or ask
for one tool call, with the rule that decided and why. Pure: no I/O, no awaiting."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from warden.governance.decision import Decision, Verdict
from warden.governance.policy.conditions import Condition, Unknown
from warden.governance.policy.config import PolicyConfig, RateLimit, RateScope, Rule, glob_regex
from warden.governance.policy.ratelimit import SlidingWindowLimiter

if TYPE_CHECKING:
    import re

    from warden.governance.gate import CallContext
    from warden.governance.policy.cedar import CedarPolicies
    from warden.tools.base import Tool

MAX_ARGUMENT_DEPTH = 64
RULE_ARGUMENTS = "policy.arguments"
RULE_DEFAULT = "default"
RULE_DEFAULT_SIDE_EFFECTS = "default.side_effects"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One tool call as policy sees it."""

    tenant_id: str
    agent: str
    task_id: str
    tool: str
    """The tool's name; MCP tools are ``server.tool``."""
    side_effects: bool
    idempotent: bool
    arguments: Any
    """The parsed arguments; anything but a JSON object is denied."""

    @classmethod
    def for_call(cls, ctx: CallContext, tool: Tool, arguments: Any) -> PolicyRequest:
        return cls(
            tenant_id=ctx.tenant_id,
            agent=ctx.agent,
            task_id=ctx.task_id,
            tool=tool.name,
            side_effects=tool.side_effects,
            idempotent=tool.idempotent,
            arguments=arguments,
        )


@dataclass(frozen=True)
class _Scope:
    tools: re.Pattern[str]
    agents: re.Pattern[str]
    tenants: re.Pattern[str]

    @classmethod
    def of(cls, tools: list[str], agents: list[str], tenants: list[str]) -> _Scope:
        return cls(glob_regex(tools), glob_regex(agents), glob_regex(tenants))

    def covers(self, request: PolicyRequest) -> bool:
        return bool(
            self.tools.match(request.tool)
            and self.agents.match(request.agent)
            and self.tenants.match(request.tenant_id)
        )


@dataclass(frozen=True)
class _CompiledRule:
    name: str
    verdict: Verdict
    scope: _Scope
    side_effects: bool | None
    condition: Condition | None
    reason: str

    @classmethod
    def of(cls, rule: Rule) -> _CompiledRule:
        return cls(
            rule.name,
            Verdict(rule.decision),
            _Scope.of(rule.tools, rule.agents, rule.tenants),
            rule.side_effects,
            rule.condition,
            rule.reason or f"rule {rule.name!r} matched",
        )


@dataclass(frozen=True)
class _CompiledLimit:
    name: str
    key: tuple[Any, ...]
    """Identifies the limit across reloads, so an unchanged limit keeps its counts."""
    scope: _Scope
    per: RateScope
    max: int
    window: float

    @classmethod
    def of(cls, index: int, limit: RateLimit) -> _CompiledLimit:
        key = (
            tuple(limit.tools),
            tuple(limit.agents),
            tuple(limit.tenants),
            limit.per,
            limit.max,
            limit.window,
        )
        return cls(
            limit.name or f"rate_limits[{index}]",
            key,
            _Scope.of(limit.tools, limit.agents, limit.tenants),
            limit.per,
            limit.max,
            limit.window,
        )

    def counter_key(self, request: PolicyRequest) -> tuple[Any, ...]:
        match self.per:
            case RateScope.TENANT:
                who: tuple[str, ...] = (request.tenant_id,)
            case RateScope.AGENT:
                who = (request.tenant_id, request.agent)
            case RateScope.TASK:
                who = (request.task_id,)
        return (self.key, who)


def _malformed(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not JSON-shaped (finite numbers, string keys, bounded depth), or None."""
    if depth > MAX_ARGUMENT_DEPTH:
        return f"are nested deeper than {MAX_ARGUMENT_DEPTH} levels"
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"contain a number that is not finite ({value})"
    if isinstance(value, list):
        return next((why for item in value if (why := _malformed(item, depth + 1))), None)
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            return "contain an object key that is not a string"
        return next((why for item in value.values() if (why := _malformed(item, depth + 1))), None)
    return f"contain a {type(value).__name__}, which JSON has no place for"


@dataclass
class PolicyEngine:
    """Decides tool calls. Build it with `PolicyEngine.from_config` (or `PolicyStore`)."""

    rules: tuple[_CompiledRule, ...]
    default_side_effects: Verdict = Verdict.ASK
    default: Verdict = Verdict.ALLOW
    limits: tuple[_CompiledLimit, ...] = ()
    cedar: CedarPolicies | None = None
    limiter: SlidingWindowLimiter = field(default_factory=SlidingWindowLimiter)
    """Shared by the engines a `PolicyStore` builds, so a reload does not reset the counts."""

    @classmethod
    def from_config(
        cls,
        config: PolicyConfig,
        file_rules: Sequence[Rule] = (),
        *,
        cedar: CedarPolicies | None = None,
        limiter: SlidingWindowLimiter | None = None,
    ) -> PolicyEngine:
        """``config.rules`` first, then ``file_rules`` (from `load_policy_files`), in order."""
        return cls(
            rules=tuple(_CompiledRule.of(rule) for rule in (*config.rules, *file_rules)),
            default_side_effects=Verdict(config.default_side_effects),
            default=Verdict(config.default),
            limits=tuple(_CompiledLimit.of(i, limit) for i, limit in enumerate(config.rate_limits)),
            cedar=cedar,
            limiter=limiter or SlidingWindowLimiter(),
        )

    def decide(self, request: PolicyRequest) -> Decision:
        """The decision for one call. A call that passes the rules (allow or ask) counts towards
        the rate limits that cover it, and is denied instead when one is exhausted."""
        decision = self._decide_rules(request)
        if decision.verdict is Verdict.DENY or not self.limits:
            return decision
        return self._check_limits(request) or decision

    def _decide_rules(self, request: PolicyRequest) -> Decision:
        arguments = request.arguments
        if not isinstance(arguments, Mapping):
            kind = "null" if arguments is None else type(arguments).__name__
            return Decision(
                Verdict.DENY, RULE_ARGUMENTS, f"the arguments of {request.tool} are a {kind}, not an object"
            )
        if why := _malformed(arguments):
            return Decision(Verdict.DENY, RULE_ARGUMENTS, f"the arguments of {request.tool} {why}")
        for rule in self.rules:
            if rule.side_effects is not None and rule.side_effects != request.side_effects:
                continue
            if not rule.scope.covers(request):
                continue
            if rule.condition is None:
                return Decision(rule.verdict, rule.name, rule.reason)
            outcome = rule.condition.evaluate(arguments)
            if isinstance(outcome, Unknown):
                return Decision(
                    Verdict.DENY,
                    rule.name,
                    f"rule {rule.name!r} cannot judge {request.tool}: {outcome}; denied (fail closed)",
                )
            if outcome:
                return Decision(rule.verdict, rule.name, rule.reason)
        if self.cedar is not None and (decision := self.cedar.decide(request)) is not None:
            return decision
        if request.side_effects:
            return Decision(
                self.default_side_effects,
                RULE_DEFAULT_SIDE_EFFECTS,
                f"no rule matched {request.tool}, which has side effects",
            )
        return Decision(
            self.default, RULE_DEFAULT, f"no rule matched {request.tool}, which has no side effects"
        )

    def _check_limits(self, request: PolicyRequest) -> Decision | None:
        now = self.limiter.clock()
        covering = [limit for limit in self.limits if limit.scope.covers(request)]
        for limit in covering:
            key = limit.counter_key(request)
            if self.limiter.count(key, limit.window, now) >= limit.max:
                wait = self.limiter.retry_after(key, limit.window, now)
                return Decision(
                    Verdict.DENY,
                    limit.name,
                    f"rate limit: {request.tool} was called {limit.max} times in the last "
                    f"{limit.window:g}s for this {limit.per.value}; try again in {math.ceil(wait)}s",
                )
        for limit in covering:
            self.limiter.record(limit.counter_key(request), limit.window, now)
        return None
