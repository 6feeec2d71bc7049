"""The policy engine (issue 5): declarative rules per tenant, agent and tool, typed conditions
on arguments, per-tool rate limits and optional Cedar policies; decides allow, deny or ask.

Not yet called by the gate. The wiring it is built for:

1. At start: ``store = PolicyStore(config.policy)`` — raises `PolicyError` listing every problem
   as ``file:line: path: message``; the owner's task group runs ``store.watch()`` to reload.
2. Per tool call, in ``Gate.decide_tool``:
   ``store.decide(PolicyRequest.for_call(ctx, tool, arguments))`` → `Decision`.
"""

from warden.governance.policy.cedar import CedarPolicies
from warden.governance.policy.conditions import Condition, ConditionError, Unknown, compile_condition
from warden.governance.policy.config import (
    CedarConfig,
    PolicyConfig,
    PolicyFile,
    RateLimit,
    RateScope,
    Rule,
)
from warden.governance.policy.engine import (
    RULE_ARGUMENTS,
    RULE_DEFAULT,
    RULE_DEFAULT_SIDE_EFFECTS,
    PolicyEngine,
    PolicyRequest,
)
from warden.governance.policy.errors import PolicyError
from warden.governance.policy.files import load_policy_files, parse_policy_text
from warden.governance.policy.ratelimit import SlidingWindowLimiter
from warden.governance.policy.store import PolicyStore

__all__ = [
    "RULE_ARGUMENTS",
    "RULE_DEFAULT",
    "RULE_DEFAULT_SIDE_EFFECTS",
    "CedarConfig",
    "CedarPolicies",
    "Condition",
    "ConditionError",
    "PolicyConfig",
    "PolicyEngine",
    "PolicyError",
    "PolicyFile",
    "PolicyRequest",
    "PolicyStore",
    "RateLimit",
    "RateScope",
    "Rule",
    "SlidingWindowLimiter",
    "Unknown",
    "compile_condition",
    "load_policy_files",
    "parse_policy_text",
]
