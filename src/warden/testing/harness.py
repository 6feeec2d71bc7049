"""`WardenHarness`: a real Warden (runtime, HTTP server on a loopback port, workers) inside a
test's event loop, with an admin key and an authenticated HTTP client ready."""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any

import httpx

from warden.api.app import create_app
from warden.api.server import WardenServer, server_for
from warden.config import WardenConfig
from warden.runtime import Runtime
from warden.service.keys import NewKey


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class WardenHarness:
    def __init__(self, config: WardenConfig, *, workers: int = 1) -> None:
        self.config = config
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runtime: Runtime | None = None
        self.admin: NewKey | None = None
        self._server: WardenServer | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def admin_key(self) -> str:
        assert self.admin is not None
        return self.admin.secret

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 30.0), **kwargs
        )

    async def key_for(self, tenant: str, scopes: list[str] | None = None) -> str:
        assert self.runtime is not None
        return (await self.runtime.keys.create(tenant, name=f"test {tenant}", scopes=scopes)).secret

    async def __aenter__(self) -> WardenHarness:
        self.runtime = await Runtime.open(self.config)
        self.admin = await self.runtime.keys.create("default", name="test admin", scopes=["admin"])
        app = create_app(self.config, workers=self.workers, runtime=self.runtime)
        self._server = server_for(app, host="127.0.0.1", port=self.port, ws="websockets-sansio")
        self._serving = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(20):
            while not self._server.started:
                if self._serving.done():
                    self._serving.result()
                    raise RuntimeError("the server stopped during start")
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            try:
                async with asyncio.timeout(30):
                    await self._serving
            except (TimeoutError, asyncio.CancelledError):
                self._serving.cancel()
        if self.runtime is not None:
            await self.runtime.close()
