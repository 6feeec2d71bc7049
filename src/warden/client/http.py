"""`WardenClient`: the HTTP API from Python (the CLI uses it), including an event stream that
reconnects with ``Last-Event-ID`` and so never shows an event twice or skips one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from warden.errors import WardenError


class ApiError(WardenError):
    """An error answer from the Warden API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.http_status = status


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
        code, message = str(body.get("code", "http_error")), str(body.get("message", response.text))
    except (ValueError, AttributeError):
        code, message = "http_error", response.text[:500] or response.reason_phrase
    raise ApiError(response.status_code, code, message)


class WardenClient:
    def __init__(self, url: str, api_key: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> WardenClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"cannot reach Warden at {self.url}: {exc}") from exc
        _raise_for(response)
        return response.json()

    async def submit(
        self,
        agent: str | None,
        text: str,
        *,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": text}
        if agent:
            body["agent"] = agent
        if session_id:
            body["session_id"] = session_id
        if metadata:
            body["metadata"] = metadata
        result: dict[str, Any] = await self._call("POST", "/v1/tasks", json=body)
        return result

    async def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/tasks/{task_id}")
        return result

    async def tasks(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/v1/tasks", params={k: v for k, v in params.items() if v is not None}
        )
        return result

    async def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", f"/v1/tasks/{task_id}/cancel")
        return result

    async def approvals(self, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(
            "GET", "/v1/approvals", params={k: v for k, v in params.items() if v is not None}
        )
        return result

    async def approval(self, approval_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/approvals/{approval_id}")
        return result

    async def decide(
        self,
        approval_id: str,
        decision: str,
        *,
        reason: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Approve or deny a waiting tool call (``arguments`` replaces its arguments on approve)."""
        body: dict[str, Any] = {"decision": decision}
        if reason is not None:
            body["reason"] = reason
        if arguments is not None:
            body["arguments"] = arguments
        result: dict[str, Any] = await self._call("POST", f"/v1/approvals/{approval_id}", json=body)
        return result

    async def audit_export(self, *, after_seq: int = 0, **params: Any) -> AsyncIterator[str]:
        """The tenant's audit entries oldest first, one JSON line each, as the server streams them."""
        query = {"after_seq": after_seq, **{k: v for k, v in params.items() if v is not None}}
        try:
            async with self._http.stream(
                "GET", "/v1/audit/export", params=query, timeout=httpx.Timeout(30, read=300)
            ) as response:
                if not response.is_success:
                    await response.aread()
                    _raise_for(response)
                async for line in response.aiter_lines():
                    if line.strip():
                        yield line
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"cannot reach Warden at {self.url}: {exc}") from exc

    async def agents(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call("GET", "/v1/agents")
        return result

    async def events(
        self, task_id: str, *, after: int = 0, retries: int = 30
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event after ``after`` until the terminal one, reconnecting on network errors."""
        last = after
        failures = 0
        while True:
            try:
                headers = {"Last-Event-ID": str(last)} if last else {}
                async with aconnect_sse(
                    self._http,
                    "GET",
                    f"/v1/tasks/{task_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30, read=None),
                ) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        _raise_for(source.response)
                    async for sse in source.aiter_sse():
                        if not sse.data or not sse.id:
                            continue
                        event: dict[str, Any] = json.loads(sse.data)
                        if event["seq"] <= last:
                            continue
                        last = event["seq"]
                        failures = 0
                        yield event
                        if event["type"] in ("task.completed", "task.failed", "task.cancelled"):
                            return
                    # The server ended the stream without a terminal event: the task ended
                    # before our resume point. Nothing more will come.
                    return
            except (httpx.TransportError, httpx.RemoteProtocolError) as exc:
                failures += 1
                if failures > retries:
                    raise ApiError(0, "unreachable", f"lost the event stream: {exc}") from exc
                await asyncio.sleep(min(0.2 * failures, 2.0))
