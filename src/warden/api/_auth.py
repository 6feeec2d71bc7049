"""Authentication: an API key from the Authorization header (or ``api_key`` in the query for
stream endpoints, which browsers cannot give headers), resolved to a tenant-bound principal."""

from __future__ import annotations

from fastapi import Request, WebSocket

from warden.service.keys import Principal


def _token(headers: dict[str, str] | object, query_key: str | None) -> str | None:
    get = getattr(headers, "get")  # noqa: B009 - works for both Headers types
    auth = get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else auth.strip()
    key = get("x-api-key")
    if key:
        return str(key).strip()
    return query_key


async def principal(request: Request) -> Principal:
    runtime = request.app.state.runtime
    return await runtime.keys.authenticate(_token(request.headers, request.query_params.get("api_key")))


async def ws_principal(websocket: WebSocket) -> Principal:
    runtime = websocket.app.state.runtime
    return await runtime.keys.authenticate(_token(websocket.headers, websocket.query_params.get("api_key")))
