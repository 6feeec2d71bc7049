"""The ASGI application: routes, error handling, and a lifespan that opens the runtime and,
when this process also works, runs the workers beside the API."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route

from warden import __version__, console
from warden.api import _errors, agents, approvals, audit, health, metrics, sandboxes, sessions, tasks
from warden.api._limits import BodySizeLimit
from warden.api._sse import OpenStreams
from warden.config import WardenConfig
from warden.protocols.mcp import MCP_PATH, McpEndpoint, serve_http
from warden.protocols.mcp.http import MAX_REQUEST_BYTES as MCP_MAX_REQUEST_BYTES
from warden.runtime import Runtime
from warden.service.keys import DEFAULT_SCOPES, NewKey, Principal
from warden.telemetry.http import HttpTelemetry
from warden.worker.worker import Worker

log = logging.getLogger("warden.api")


GC_THRESHOLDS = (50_000, 20, 20)
"""The collector's thresholds in a serving process (CPython's default is 700, 10, 10)."""


def create_app(
    config: WardenConfig,
    *,
    workers: int = 1,
    runtime: Runtime | None = None,
    on_bootstrap_key: Callable[[NewKey], None] | None = None,
    mcp_conformance: bool = False,
) -> FastAPI:
    """``workers`` worker loops run in this process beside the API (0: API only).

    ``mcp_conformance`` mounts the MCP conformance suite's fixtures at ``/mcp`` and lets every
    ``/mcp`` request act, without a key, as a ``conformance`` tenant. Only the conformance entry
    point (``warden.protocols.mcp.conformance``) sets it; no configuration can."""
    mcp_endpoint = McpEndpoint()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or await Runtime.open(config)
        app.state.runtime = rt
        await rt.start_background()
        # Objects made at start-up live for the process: move them out of the collector's
        # way, so a full collection under load pauses streams for less time.
        gc.collect()
        gc.freeze()
        # And collect less often: with 1,000 streams open the tracked objects are ~300 per
        # stream, and a full collection over them stalled every stream for 150-250 ms every few
        # seconds. Fewer young collections mean far fewer full ones; garbage in cycles (rare
        # here: most objects are freed by reference counting) waits a little longer.
        gc.set_threshold(*GC_THRESHOLDS)
        new_key = await rt.keys.bootstrap()
        if new_key is not None and on_bootstrap_key is not None:
            on_bootstrap_key(new_key)
        pool = [Worker(rt) for _ in range(workers)]
        app.state.workers = pool
        running = [asyncio.create_task(w.run(), name=f"worker:{w.id}") for w in pool]
        try:
            fixture_principal = await _conformance_principal(rt) if mcp_conformance else None
            async with serve_http(
                mcp_endpoint,
                rt,
                allowed_origins=config.server.mcp_allowed_origins,
                fixture_principal=fixture_principal,
            ):
                yield
        finally:
            for w in pool:
                w.request_stop()
            for task in running:
                with contextlib.suppress(Exception):
                    await task
            if runtime is None:
                await rt.close()

    app = FastAPI(
        title="Warden",
        version=__version__,
        summary="A self-hosted runtime that runs LLM agents in production.",
        lifespan=lifespan,
    )
    app.state.streams = OpenStreams()
    _errors.install(app)
    # The largest legitimate body is a task input plus its metadata and JSON escaping.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=config.server.max_input_chars * 6 + 64 * 1024,
        upload_max_bytes=sandboxes.MAX_FILE_BYTES,
        path_max_bytes={MCP_PATH: MCP_MAX_REQUEST_BYTES},
    )
    # Outermost: it times everything below, size limits and error handling included.
    app.add_middleware(HttpTelemetry)
    for module in (tasks, sessions, agents, sandboxes, approvals, audit, health, metrics):
        app.include_router(module.router)
    # Any method: POST carries JSON-RPC, GET the legacy server-to-client stream, DELETE ends a session.
    app.router.routes.append(Route(MCP_PATH, endpoint=mcp_endpoint, include_in_schema=False))
    console.mount(app)
    return app


async def _conformance_principal(rt: Runtime) -> Principal:
    key = await rt.keys.create("conformance", name="MCP conformance fixtures", scopes=list(DEFAULT_SCOPES))
    return await rt.keys.authenticate(key.secret)
