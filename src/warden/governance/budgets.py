"""Budgets over time windows, per tenant and optionally per agent: tokens, dollars and tasks.

A task's own limits (steps, tokens, tool calls, wall time, cost) are `Limits` in its agent's
spec and are checked by the Gate. These budgets add up every task of a tenant (or of one of its
agents) started inside a sliding window: crossing one refuses new tasks (HTTP 429) and stops
running ones before their next model call, each with the budget's name and figures.

Usage is read from the tasks table (each task's usage is written with every checkpoint) and
cached for ``cache_seconds``, so a burst of parallel tasks can overshoot a budget by what they
spend in that interval; the figures in docs/governance.md say how much.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select

from warden.errors import BudgetExceeded
from warden.store.database import Database
from warden.store.schema import tasks, tenants

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(value: str | float | int) -> float:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"30d"`` or seconds, as seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("must be a duration such as 3600, '15m', '24h' or '30d'")
        seconds = float(match[1]) * _UNIT[match[2]]
    if not 1 <= seconds <= 366 * 86400:
        raise ValueError("must be between 1 second and 366 days")
    return seconds


class BudgetConfig(BaseModel):
    """One entry of ``budgets:`` in warden.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """Shown in errors, events and the audit log."""
    tenant: str | None = None
    """A tenant's name; unset: the budget applies to every tenant, each counted on its own."""
    agent: str | None = None
    """An agent's name; unset: all the tenant's agents together."""
    window: float = 86400.0
    """The sliding window: seconds, or ``"15m"``, ``"24h"``, ``"30d"``."""
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    """US dollars; needs a ``price`` on the models the agents use."""
    max_tasks: int | None = Field(default=None, ge=1)
    """Tasks submitted inside the window."""

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("must be a duration such as 3600, '15m', '24h' or '30d'")
        return parse_window(value)

    @model_validator(mode="after")
    def _has_a_limit(self) -> BudgetConfig:
        if self.max_tokens is None and self.max_cost is None and self.max_tasks is None:
            raise ValueError("a budget needs at least one of max_tokens, max_cost, max_tasks")
        return self


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """What one tenant has used of one budget."""

    budget: BudgetConfig
    tokens: int
    cost: float
    tasks: int
    per_task: dict[str, tuple[int, float]] = field(default_factory=dict, repr=False, compare=False)
    """Tokens and cost of each task counted, so a running task can swap in its live figures."""

    def with_live(self, task_id: str, tokens: int, cost: float) -> BudgetUsage:
        """The figures with one task's stored usage replaced by what it has used by now."""
        stored_tokens, stored_cost = self.per_task.get(task_id, (0, 0.0))
        return replace(
            self,
            tokens=self.tokens - stored_tokens + tokens,
            cost=self.cost - stored_cost + cost,
            tasks=self.tasks + (0 if task_id in self.per_task else 1),
        )

    def exceeded(self, *, adding_task: bool = False) -> str | None:
        """Why the budget is spent (a sentence), or None."""
        b = self.budget
        window = _human_window(b.window)
        if b.max_tokens is not None and self.tokens >= b.max_tokens:
            return f"budget {b.name!r}: {self.tokens} tokens used in the last {window}, the limit is {b.max_tokens}"
        if b.max_cost is not None and self.cost >= b.max_cost:
            return f"budget {b.name!r}: ${self.cost:.4f} spent in the last {window}, the limit is ${b.max_cost:g}"
        # A task budget limits submissions; it never stops a task that is already running.
        if adding_task and b.max_tasks is not None and self.tasks + 1 > b.max_tasks:
            return f"budget {b.name!r}: {self.tasks} tasks in the last {window}, the limit is {b.max_tasks}"
        return None

    def to_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "name": b.name,
            "agent": b.agent,
            "window_seconds": b.window,
            "tokens": self.tokens,
            "cost": round(self.cost, 6),
            "tasks": self.tasks,
            "max_tokens": b.max_tokens,
            "max_cost": b.max_cost,
            "max_tasks": b.max_tasks,
        }


def _human_window(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class BudgetLedger:
    """Adds up tenants' usage per budget and says when one is spent."""

    def __init__(
        self,
        db: Database,
        budgets: list[BudgetConfig],
        price_of: Callable[[str], Any],
        *,
        cache_seconds: float = 2.0,
    ) -> None:
        self.db = db
        self.budgets = budgets
        self.price_of = price_of
        self.cache_seconds = cache_seconds
        self._tenant_names: dict[str, str] = {}
        self._cache: dict[tuple[str, str], tuple[float, BudgetUsage]] = {}

    def __bool__(self) -> bool:
        return bool(self.budgets)

    async def _tenant_name(self, tenant_id: str) -> str:
        name = self._tenant_names.get(tenant_id)
        if name is None:
            async with self.db.read() as conn:
                name = (
                    await conn.execute(select(tenants.c.name).where(tenants.c.id == tenant_id))
                ).scalar_one_or_none() or ""
            self._tenant_names[tenant_id] = name
        return name

    async def applicable(self, tenant_id: str, agent: str | None) -> list[BudgetConfig]:
        """The budgets covering ``agent``'s tasks in the tenant (all of the tenant's budgets when
        ``agent`` is None)."""
        if not self.budgets:
            return []
        name = await self._tenant_name(tenant_id)
        return [
            b
            for b in self.budgets
            if (b.tenant is None or b.tenant == name) and (agent is None or b.agent in (None, agent))
        ]

    async def usage(self, tenant_id: str, budget: BudgetConfig, *, fresh: bool = False) -> BudgetUsage:
        key = (tenant_id, budget.name)
        cached = self._cache.get(key)
        now = time.monotonic()
        if not fresh and cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        query = select(tasks.c.id, tasks.c.agent_name, tasks.c.usage).where(
            tasks.c.tenant_id == tenant_id, tasks.c.created_at >= self.db.now() - budget.window
        )
        if budget.agent is not None:
            query = query.where(tasks.c.agent_name == budget.agent)
        tokens, cost = 0, 0.0
        per_task: dict[str, tuple[int, float]] = {}
        async with self.db.read() as conn:
            for row in await conn.execute(query):
                task_tokens, task_in, task_out = _tokens(row.usage)
                price = self.price_of(row.agent_name)
                task_cost = price.cost(task_in, task_out) if price is not None else 0.0
                per_task[row.id] = (task_tokens, task_cost)
                tokens += task_tokens
                cost += task_cost
        usage = BudgetUsage(budget, tokens, cost, len(per_task), per_task)
        self._cache[key] = (now, usage)
        return usage

    async def check(
        self,
        tenant_id: str,
        agent: str,
        *,
        adding_task: bool = False,
        live: tuple[str, int, float] | None = None,
    ) -> None:
        """Raise `BudgetExceeded` if a budget of the tenant covering ``agent`` is spent.
        ``adding_task`` counts the task about to be submitted; ``live`` is a running task's
        (id, tokens, cost) by now, which replace its possibly older stored figures."""
        budgets = await self.applicable(tenant_id, agent)
        for budget in budgets:
            usage = await self.usage(tenant_id, budget)
            if live is not None:
                usage = usage.with_live(*live)
            reason = usage.exceeded(adding_task=adding_task)
            if reason is not None:
                raise BudgetExceeded(reason, details={"budget": budget.name})
        if adding_task:
            # Count the task now in the cached figures, so submits inside one cache interval
            # cannot pass a task budget together (exact within a process, close across several).
            for budget in budgets:
                cached = self._cache.get((tenant_id, budget.name))
                if cached is not None:
                    usage = cached[1]
                    self._cache[(tenant_id, budget.name)] = (cached[0], replace(usage, tasks=usage.tasks + 1))

    async def report(self, tenant_id: str) -> list[BudgetUsage]:
        return [await self.usage(tenant_id, b, fresh=True) for b in await self.applicable(tenant_id, None)]


def _tokens(usage: Any) -> tuple[int, int, int]:
    """(total, input, output) tokens of a task's usage column (one entry per model)."""
    total = inp = out = 0
    if isinstance(usage, dict):
        for item in usage.values():
            if isinstance(item, dict):
                i, o = int(item.get("input_tokens") or 0), int(item.get("output_tokens") or 0)
                inp, out = inp + i, out + o
                total += int(item.get("total_tokens") or i + o)
    return total, inp, out


__all__ = ["BudgetConfig", "BudgetLedger", "BudgetUsage", "parse_window"]
