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

from warden import __version__
from warden.api import _errors, agents, health, sandboxes, sessions, tasks
from warden.api._limits import BodySizeLimit
from warden.config import WardenConfig
from warden.runtime import Runtime
from warden.service.keys import NewKey
from warden.worker.worker import Worker

log = logging.getLogger("warden.api")


def create_app(
    config: WardenConfig,
    *,
    workers: int = 1,
    runtime: Runtime | None = None,
    on_bootstrap_key: Callable[[NewKey], None] | None = None,
) -> FastAPI:
    """``workers`` worker loops run in this process beside the API (0: API only)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or await Runtime.open(config)
        app.state.runtime = rt
        await rt.start_background()
        # Objects made at start-up live for the process: move them out of the collector's
        # way, so a full collection under load pauses streams for less time.
        gc.collect()
        gc.freeze()
        new_key = await rt.keys.bootstrap()
        if new_key is not None and on_bootstrap_key is not None:
            on_bootstrap_key(new_key)
        pool = [Worker(rt) for _ in range(workers)]
        app.state.workers = pool
        running = [asyncio.create_task(w.run(), name=f"worker:{w.id}") for w in pool]
        try:
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
    _errors.install(app)
    # The largest legitimate body is a task input plus its metadata and JSON escaping.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=config.server.max_input_chars * 6 + 64 * 1024,
        upload_max_bytes=sandboxes.MAX_FILE_BYTES,
    )
    for module in (tasks, sessions, agents, sandboxes, health):
        app.include_router(module.router)
    return app
