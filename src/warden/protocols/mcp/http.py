"""``/mcp`` over Streamable HTTP: an ASGI endpoint the API mounts before the runtime exists, and
``serve_http``, which builds the server once the runtime is open and runs its session manager."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from warden.protocols.mcp._auth import Authenticate, OriginPolicy, admit
from warden.protocols.mcp.server import WardenMCP, build_server
from warden.service.keys import Principal

if TYPE_CHECKING:
    from warden.runtime import Runtime

log = logging.getLogger("warden.mcp")

MCP_PATH = "/mcp"
MAX_REQUEST_BYTES = 32 * 2**20
"""A JSON-RPC request body: a file written through sandbox_write_file (base64) is the largest."""
SESSION_IDLE_SECONDS = 30 * 60.0
DEFAULT_ALLOWED_ORIGINS: tuple[str, ...] = ()
"""Origins besides loopback that browsers may call ``/mcp`` from (``server.mcp_allowed_origins``)."""


class McpEndpoint:
    """The ASGI app behind ``/mcp``. Until the lifespan attaches a server it answers 503; after,
    each request passes the Origin check and API-key authentication, then the session manager."""

    def __init__(self) -> None:
        self._manager: StreamableHTTPSessionManager | None = None
        self._origins = OriginPolicy()
        self._authenticate: Authenticate | None = None

    def attach(
        self, manager: StreamableHTTPSessionManager, origins: OriginPolicy, authenticate: Authenticate
    ) -> None:
        self._manager, self._origins, self._authenticate = manager, origins, authenticate

    def detach(self) -> None:
        self._manager = None
        self._authenticate = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager, authenticate = self._manager, self._authenticate
        if manager is None or authenticate is None:
            body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"the MCP server is not running"}}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        # RFC 9110 §5.5: a field value excludes surrounding whitespace. h11 strips it, httptools
        # (uvicorn's faster parser) keeps trailing blanks, and the SDK compares Mcp-* headers
        # with the body byte for byte.
        scope["headers"] = [(name, value.strip(b" \t")) for name, value in scope["headers"]]
        if await admit(scope, receive, send, origins=self._origins, authenticate=authenticate):
            await manager.handle_request(scope, receive, send)


@asynccontextmanager
async def serve_http(
    endpoint: McpEndpoint,
    runtime: Runtime,
    *,
    allowed_origins: Iterable[str] = DEFAULT_ALLOWED_ORIGINS,
    fixture_principal: Principal | None = None,
) -> AsyncIterator[WardenMCP]:
    """Run ``/mcp`` for the lifetime of the block. With ``fixture_principal`` the conformance
    fixtures are mounted and every request acts as that principal without a key: only the
    conformance entry point passes it."""
    fixtures = fixture_principal is not None
    mcp = build_server(runtime, fixtures=fixtures)
    event_store = None
    retry_interval = None
    if fixtures:
        from warden.protocols.mcp.fixtures import MemoryEventStore

        event_store, retry_interval = MemoryEventStore(), 100
    # The SDK's own Host/Origin check is off: the gate in front does the Origin check, and a
    # Host allow-list would break every deployment behind a proxy with a real hostname.
    mcp.server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        event_store=event_store,
        retry_interval=retry_interval,
        max_request_body_size=MAX_REQUEST_BYTES,
        session_idle_timeout=SESSION_IDLE_SECONDS,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = mcp.server.session_manager

    authenticate: Authenticate = runtime.keys.authenticate
    if fixture_principal is not None:
        fixed = fixture_principal

        async def authenticate_as_fixture(_key: str | None) -> Principal:
            return fixed

        authenticate = authenticate_as_fixture

    async with manager.run():
        endpoint.attach(manager, OriginPolicy(allowed_origins), authenticate)
        try:
            yield mcp
        finally:
            mcp.stop_accepting()
            endpoint.detach()
