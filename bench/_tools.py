"""Tools the benchmarks register through ``WardenConfig(tools=[{"name": ..., "python": "bench._tools:..."}])``."""

from __future__ import annotations

import asyncio
import os
import time

from warden.tools.base import tool


@tool(idempotent=True, side_effects=False)
async def noop() -> str:
    """Does nothing and answers at once (the benchmarks' no-op tool)."""
    return "ok"


@tool(idempotent=True, side_effects=False)
async def wait_for_file(path: str, timeout: float = 60.0) -> str:
    """Waits until ``path`` exists (at most ``timeout`` seconds): lets a benchmark hold a task at a
    known point until its subscribers are connected."""
    deadline = time.monotonic() + min(max(timeout, 0.0), 120.0)
    while not os.path.exists(path):  # noqa: ASYNC240 - one stat of a local file
        if time.monotonic() >= deadline:
            return "timed out"
        await asyncio.sleep(0.005)
    return "go"
