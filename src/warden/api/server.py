"""Serving a Warden app with uvicorn, so that a shutdown ends the open event streams first.

uvicorn stops by waiting for every in-flight response to finish, and an event stream lasts as
long as its task (hours, waiting for an approval). ``WardenServer`` closes the app's open
streams as its shutdown begins, whatever started it (a signal, or ``should_exit``); each client
sees its stream end and resumes on another process with ``Last-Event-ID``.
"""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from warden.api._sse import OpenStreams

GRACEFUL_SHUTDOWN_S = 30
"""How long other requests (a sandbox run streaming its output) may take to finish at shutdown."""


class WardenServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        streams = getattr(getattr(self.config.app, "state", None), "streams", None)
        if isinstance(streams, OpenStreams):
            streams.close()
        await super().shutdown(sockets)


def server_for(app: Any, *, host: str, port: int, **options: Any) -> WardenServer:
    """A server for ``app`` with Warden's defaults (quiet logs, lifespan on, a shutdown grace)."""
    options.setdefault("log_level", "warning")
    options.setdefault("lifespan", "on")
    options.setdefault("timeout_graceful_shutdown", GRACEFUL_SHUTDOWN_S)
    return WardenServer(uvicorn.Config(app, host=host, port=port, **options))
