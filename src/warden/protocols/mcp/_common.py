"""What every Warden MCP tool shares: finding the caller behind a request, and turning a value
or a ``WardenError`` into a tool result (errors are results the model can read, not crashes)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent

from warden.errors import Unauthorized, WardenError
from warden.protocols.mcp._auth import PRINCIPAL_SCOPE_KEY
from warden.service.keys import Principal

log = logging.getLogger("warden.mcp")

PrincipalOf = Callable[[Context], Principal]
"""Who sent this tool call: over HTTP the key the request carried, over stdio the key the
process was started with."""


def principal_resolver(fixed: Principal | None) -> PrincipalOf:
    """An HTTP request answers with the principal ``/mcp``'s gate put in its scope; a request
    without one (stdio) gets ``fixed``. An HTTP request never falls back to ``fixed``."""

    def resolve(ctx: Context) -> Principal:
        request = ctx.request_context.request
        if request is not None:
            principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
            if isinstance(principal, Principal):
                return principal
            raise Unauthorized("this request carried no API key", code="missing_api_key")
        if fixed is None:
            raise Unauthorized("this transport has no API key", code="missing_api_key")
        return fixed

    return resolve


def ok(value: Any) -> CallToolResult:
    """JSON text for any client, and the same value as structured content when it is an object."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    structured = value if isinstance(value, dict) else None
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def failure(exc: WardenError) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=f"{exc.code}: {exc.message}")],
        structured_content=exc.to_dict(),
        is_error=True,
    )


def internal_failure(tool: str) -> CallToolResult:
    """An unexpected error: the client learns that it happened, the server log learns what."""
    log.exception("MCP tool %s failed unexpectedly", tool)
    return failure(WardenError("internal error; see the server log", code="internal_error"))


async def guarded(tool: str, op: Callable[[], Awaitable[Any]]) -> CallToolResult:
    """Run a tool's body; Warden's own errors become an ``isError`` result with code and message."""
    try:
        return ok(await op())
    except WardenError as exc:
        return failure(exc)
    except Exception:
        return internal_failure(tool)
