"""Authentication: an API key from the Authorization header (or ``api_key`` in the query for
stream endpoints, which browsers cannot give headers), resolved to a tenant-bound principal."""

from __future__ import annotations

from fastapi import Request, WebSocket
from starlette.datastructures import Headers

from warden.service.keys import KeyService, Principal


def _token(headers: Headers, query_key: str | None) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else auth.strip()
    key = headers.get("x-api-key")
    if key:
        return str(key).strip()
    return query_key


async def principal(request: Request) -> Principal:
    """Header credentials only: a key in a URL ends up in proxy and browser logs."""
    keys: KeyService = request.app.state.runtime.keys
    return await keys.authenticate(_token(request.headers, None))


async def stream_principal(request: Request) -> Principal:
    """Stream endpoints also take ``?api_key=``, because browsers' EventSource sends no headers."""
    keys: KeyService = request.app.state.runtime.keys
    return await keys.authenticate(_token(request.headers, request.query_params.get("api_key")))


async def ws_principal(websocket: WebSocket) -> Principal:
    keys: KeyService = websocket.app.state.runtime.keys
    return await keys.authenticate(_token(websocket.headers, websocket.query_params.get("api_key")))
