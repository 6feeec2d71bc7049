"""Configuration of the policy engine (issue 5): rules, policy files, defaults, rate limits and
optional Cedar policies. Attached to ``WardenConfig`` as ``policy``; policy files hold ``rules:``.

Imports nothing of ``warden.config`` or the gate, so ``warden.config`` can import it."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from warden.governance.policy.conditions import Condition, compile_condition

RULE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Rule names appear in decisions, events and the audit log."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_globs(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("needs at least one pattern ('*' matches everything)")
    for pattern in value:
        if not pattern or pattern != pattern.strip():
            raise ValueError(f"{pattern!r} is not a pattern: empty or with surrounding spaces")
    return value


class Rule(_Section):
    """One policy rule: which calls it matches and what it decides. The first matching rule wins."""

    name: str = Field(pattern=RULE_NAME_PATTERN)
    """Shown in decisions, events and the audit log; unique across all rules."""
    decision: Literal["allow", "deny", "ask"]
    """``allow``, ``deny`` or ``ask`` (a person approves or denies the call)."""
    tools: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns (fnmatch, case-sensitive) of tool names; MCP tools are ``server.tool``."""
    agents: list[str] = Field(default_factory=lambda: ["*"])
    tenants: list[str] = Field(default_factory=lambda: ["*"])
    side_effects: bool | None = None
    """Match only tools with (``true``) or without (``false``) side effects; either when unset."""
    when: dict[str, Any] | None = None
    """Conditions on the call's arguments (see `warden.governance.policy.conditions`)."""
    reason: str = Field(default="", max_length=1000)
    """Shown to the agent, the approver and in the audit log."""

    _condition: Condition | None = PrivateAttr(default=None)

    @field_validator("tools", "agents", "tenants")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return _check_globs(value)

    @model_validator(mode="after")
    def _compile(self) -> Rule:
        self._condition = compile_condition(self.when, ("when",)) if self.when is not None else None
        return self

    @property
    def condition(self) -> Condition | None:
        return self._condition


class RateScope(StrEnum):
    TENANT = "tenant"
    AGENT = "agent"
    """Per agent within a tenant."""
    TASK = "task"


class RateLimit(_Section):
    """At most ``max`` calls of the matching tools per ``window`` seconds, counted per scope."""

    name: str | None = Field(default=None, pattern=RULE_NAME_PATTERN)
    """Shown in decisions; ``rate_limits[<index>]`` when unset."""
    tools: list[str] = Field(default_factory=lambda: ["*"])
    agents: list[str] = Field(default_factory=lambda: ["*"])
    tenants: list[str] = Field(default_factory=lambda: ["*"])
    per: RateScope = RateScope.TENANT
    max: int = Field(ge=1, le=10_000_000)
    window: float = Field(gt=0, le=31 * 24 * 3600)
    """Seconds; a sliding window."""

    @field_validator("tools", "agents", "tenants")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        return _check_globs(value)


class CedarConfig(_Section):
    """Cedar policies (needs the ``cedarpy`` package: ``pip install 'warden[cedar]'``), asked
    when no YAML rule matched."""

    policies: Path
    """A ``.cedar`` file. Principal ``Warden::Agent``, action ``Warden::Action::"call"``,
    resource ``Warden::Tool``; see docs/governance.md."""
    schema_file: Path | None = None
    """A Cedar schema (``.cedarschema`` or JSON); when given, the policies are validated against it."""
    entities: Path | None = None
    """A JSON list of extra entities (groups, tenants with attributes)."""


class PolicyConfig(_Section):
    """``policy:`` in warden.yaml."""

    rules: list[Rule] = Field(default_factory=list)
    """Checked first, in order."""
    files: list[Path] = Field(default_factory=list)
    """YAML files with ``rules:``, checked after ``rules`` in the order listed; relative paths are
    read from the directory Warden starts in. Validated at start, reloaded when they change."""
    default_side_effects: Literal["allow", "deny", "ask"] = "ask"
    """Decision for a tool with side effects that no rule matched."""
    default: Literal["allow", "deny"] = "allow"
    """Decision for a tool without side effects that no rule matched."""
    rate_limits: list[RateLimit] = Field(default_factory=list)
    cedar: CedarConfig | None = None
    reload_interval: float = Field(default=2.0, gt=0, le=3600)
    """Seconds between checks of the policy files for changes."""

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[Rule]) -> list[Rule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen.add(rule.name)
        return rules


class PolicyFile(_Section):
    """The top level of a policy file."""

    rules: list[Rule] = Field(default_factory=list)


def glob_regex(patterns: list[str]) -> re.Pattern[str]:
    """One compiled regular expression matching any of the fnmatch ``patterns``."""
    import fnmatch

    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
