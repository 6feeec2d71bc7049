"""Tools used by tests that run workers in other processes: each call leaves a line in the file
named by $WARDEN_TEST_SIDE_EFFECTS, so a test can count how often a side effect happened."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

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
