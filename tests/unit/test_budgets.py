"""Budget configuration and arithmetic: windows, validation, what counts as spent, and a running
task's live usage replacing its stored figures."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from warden.governance.budgets import BudgetConfig, BudgetUsage, parse_window


@pytest.mark.parametrize(
    ("value", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("30d", 2592000), (3600, 3600)]
)
def test_windows(value: str | int, seconds: float) -> None:
    assert parse_window(value) == seconds


@pytest.mark.parametrize("value", ["", "1w", "-5m", "0s", "400d", True, None, [1]])
def test_bad_windows_are_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        BudgetConfig(name="b", window=value, max_tokens=1)  # type: ignore[arg-type]


def test_a_budget_needs_a_limit_and_a_safe_name() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        BudgetConfig(name="b")
    with pytest.raises(ValidationError):
        BudgetConfig(name="no spaces please", max_tasks=1)
    with pytest.raises(ValidationError):
        BudgetConfig(name="b", max_tokens=0)


def test_spent_budgets_say_why() -> None:
    budget = BudgetConfig(name="daily", window="24h", max_tokens=1000, max_cost=2.0, max_tasks=3)
    assert BudgetUsage(budget, 999, 1.99, 3).exceeded() is None
    assert "1000 tokens used in the last 1d" in (BudgetUsage(budget, 1000, 0, 0).exceeded() or "")
    assert "$2.0000 spent" in (BudgetUsage(budget, 0, 2.0, 0).exceeded() or "")
    # The task count limits submissions, never a task already running.
    assert BudgetUsage(budget, 0, 0, 3).exceeded() is None
    assert "3 tasks" in (BudgetUsage(budget, 0, 0, 3).exceeded(adding_task=True) or "")


def test_live_usage_replaces_the_stored_figures_of_its_task() -> None:
    budget = BudgetConfig(name="b", max_tokens=1000)
    usage = BudgetUsage(budget, 700, 0.7, 2, {"task_a": (500, 0.5), "task_b": (200, 0.2)})
    live = usage.with_live("task_a", 900, 0.9)
    assert (live.tokens, round(live.cost, 6), live.tasks) == (1100, 1.1, 2)
    fresh = usage.with_live("task_new", 50, 0.05)
    assert (fresh.tokens, fresh.tasks) == (750, 3)
