"""The gate in front of ``/mcp``: the ``Origin`` check (DNS-rebinding protection, as the MCP spec
asks) and API-key authentication, which leaves the caller's principal in the ASGI scope."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import Receive, Scope, Send

from warden.errors import Unauthorized, WardenError
from warden.service.keys import Principal

PRINCIPAL_SCOPE_KEY = "warden.principal"
"""Where the authenticated caller lives in the ASGI scope of an ``/mcp`` request."""

UNAUTHORIZED = -32001
"""JSON-RPC error code for a missing or rejected credential (the range is the server's own)."""
FORBIDDEN_ORIGIN = -32002

Authenticate = Callable[[str | None], Awaitable[Principal]]


def _loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case, or None when it is not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class OriginPolicy:
    """Browsers send ``Origin``; a page on another site must not reach a local Warden through
    DNS rebinding. No ``Origin`` (a non-browser client) passes; loopback origins pass; any other
    passes only when listed."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(n for o in allowed if (n := normalise_origin(o)) is not None)

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        normalised = normalise_origin(origin)
        if normalised is None:
            return False
        host = urlsplit(normalised).hostname or ""
        return _loopback_host(host) or normalised in self.allowed


def api_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key`` (as the REST API takes it)."""
    found: dict[bytes, str] = {}
    for name, value in headers:
        if name in (b"authorization", b"x-api-key") and name not in found:
            found[name] = value.decode("latin-1")
    auth = found.get(b"authorization")
    if auth:
        scheme, _, credential = auth.partition(" ")
        return credential.strip() if scheme.lower() == "bearer" else auth.strip()
    header_key = found.get(b"x-api-key")
    return header_key.strip() if header_key else None


async def _reject(send: Send, status: int, code: int, message: str, detail: dict[str, Any]) -> None:
    body = json.dumps(
        {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message, "data": detail}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="warden"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _user(principal: Principal) -> AuthenticatedUser:
    """The SDK binds each Streamable HTTP session to the credential that opened it; the key id
    is that credential, so another key cannot ride an existing session."""
    return AuthenticatedUser(
        AccessToken(
            token=principal.key_id,
            client_id=principal.key_id,
            subject=principal.tenant_id,
            scopes=sorted(principal.scopes),
        )
    )


async def admit(
    scope: Scope, receive: Receive, send: Send, *, origins: OriginPolicy, authenticate: Authenticate
) -> bool:
    """Check the request; on success the principal is in ``scope``, else the answer is sent."""
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    if not origins.allows(origin):
        await _reject(
            send,
            403,
            FORBIDDEN_ORIGIN,
            "Origin not allowed: add it to server.mcp_allowed_origins to let a browser page call Warden",
            {"code": "origin_not_allowed", "origin": (origin or "")[:200]},
        )
        return False
    try:
        principal = await authenticate(api_key(scope["headers"]))
    except Unauthorized as exc:
        await _reject(send, 401, UNAUTHORIZED, exc.message, {"code": exc.code})
        return False
    except WardenError as exc:
        await _reject(send, exc.http_status, UNAUTHORIZED, exc.message, {"code": exc.code})
        return False
    scope[PRINCIPAL_SCOPE_KEY] = principal
    scope["user"] = _user(principal)
    return True
