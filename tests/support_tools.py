"""Tools used by tests that run workers in other processes: each call leaves a line in the file
named by $WARDEN_TEST_SIDE_EFFECTS, so a test can count how often a side effect happened."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from warden.tools.base import ToolContext, ToolResult, tool


def _record(line: str) -> None:
    path = Path(os.environ["WARDEN_TEST_SIDE_EFFECTS"])
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@tool(idempotent=False, side_effects=True)
async def charge_card(amount: int, seconds: float = 0.0, ctx: ToolContext | None = None) -> ToolResult:
    """Charge a card (a side effect that must never happen twice); takes `seconds`."""
    _record(f"charge-start {amount}")
    await asyncio.sleep(seconds)
    _record(f"charge-done {amount}")
    return ToolResult(f"charged {amount}")


@tool(idempotent=True, side_effects=False)
async def lookup(key: str, seconds: float = 0.0) -> ToolResult:
    """An idempotent read that may take `seconds`."""
    _record(f"lookup {key}")
    await asyncio.sleep(seconds)
    return ToolResult(f"value of {key}")


def payer_config(model: str, model_url: str, worker: dict[str, Any]) -> dict[str, Any]:
    """warden.yaml of the ``payer`` agent, which charges cards through these tools, for tests that
    run Warden in other processes (durability, cluster)."""
    return {
        "models": {"default": {"provider": "openai", "model": model, "base_url": model_url, "api_key": "x"}},
        "agents": [
            {
                "name": "payer",
                "instructions": "Pay what you are told to pay.",
                "tools": ["charge_card", "lookup"],
            }
        ],
        "agents_dirs": [],
        "sandbox": {"enabled": False},
        "tools": [
            {"name": "charge_card", "python": "tests.support_tools:charge_card"},
            {"name": "lookup", "python": "tests.support_tools:lookup"},
        ],
        # charge_card has side effects: without this rule the policy would ask a human.
        "policy": {"rules": [{"name": "payer-may-charge", "tools": ["charge_card"], "decision": "allow"}]},
        "worker": worker,
    }
