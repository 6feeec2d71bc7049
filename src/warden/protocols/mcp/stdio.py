"""``warden mcp serve --stdio``: Warden's MCP server over stdin/stdout for one client, acting as
the tenant of one API key, with workers in this process so agent tools run with no server up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from warden.config import WardenConfig
from warden.errors import Unauthorized
from warden.protocols.mcp.server import build_server
from warden.runtime import Runtime

log = logging.getLogger("warden.mcp")

API_KEY_ENV = "WARDEN_API_KEY"


async def serve_stdio(config: WardenConfig, api_key: str | None, *, workers: int = 1) -> None:
    """Serve until stdin closes. The key is ``api_key`` or ``$WARDEN_API_KEY``; it is checked
    before anything starts, and its scopes bound every tool call as they do over HTTP."""
    key = api_key or os.environ.get(API_KEY_ENV, "").strip() or None
    if key is None:
        raise Unauthorized(
            f"an API key is needed: pass --api-key or set {API_KEY_ENV} (create one with `warden keys create`)",
            code="missing_api_key",
        )
    from warden.worker.worker import Worker

    runtime = await Runtime.open(config)
    try:
        principal = await runtime.keys.authenticate(key)
        await runtime.start_background()
        mcp = build_server(runtime, principal=principal)
        pool = [Worker(runtime) for _ in range(workers)]
        running = [asyncio.create_task(w.run(), name=f"worker:{w.id}") for w in pool]
        try:
            await mcp.server.run_stdio_async()
        finally:
            mcp.stop_accepting()
            for worker in pool:
                worker.request_stop()
            try:
                async with asyncio.timeout(config.worker.shutdown_grace + 5):
                    await asyncio.gather(*running, return_exceptions=True)
            except TimeoutError:
                log.warning("workers did not stop within the shutdown grace; cancelling them")
                for task in running:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*running, return_exceptions=True)
    finally:
        await runtime.close()


def main() -> None:
    """``python -m warden.protocols.mcp``: the same as ``warden mcp serve --stdio``."""
    import sys

    from warden.config import load_config
    from warden.errors import WardenError

    try:
        asyncio.run(serve_stdio(load_config(None), None))
    except WardenError as exc:
        print(f"warden: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
