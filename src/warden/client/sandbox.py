"""`Sandbox` and `AsyncSandbox`: Warden sandboxes from Python with the names E2B users know
(`Sandbox.create`, `sb.run_code`, `sb.commands.run`, `sb.files.*`, `sb.pause`, `Sandbox.connect`,
`sb.create_snapshot`, `Sandbox.fork`). The sync class drives the async one on a private loop."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from httpx_sse import aconnect_sse

from warden.client.http import ApiError, _raise_for

T = TypeVar("T")
OutputHandler = Callable[[str], Any]


@dataclass(frozen=True)
class Logs:
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    """A rich result of `run_code`, such as a matplotlib figure."""

    type: str
    data: str
    """Base64 for binary types."""

    @property
    def png(self) -> bytes | None:
        return base64.b64decode(self.data) if self.type == "image/png" else None


@dataclass(frozen=True)
class ExecutionError:
    name: str
    value: str
    traceback: str


@dataclass(frozen=True)
class Execution:
    text: str | None
    """``repr`` of the last expression, like a notebook's output cell."""
    logs: Logs
    results: list[Result]
    error: ExecutionError | None
    context_restarted: bool = False


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str
    pid: int | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class EntryInfo:
    name: str
    path: str
    type: str
    size: int


def _settings(url: str | None, api_key: str | None) -> tuple[str, str]:
    base = url or os.environ.get("WARDEN_URL") or "http://127.0.0.1:8080"
    key = api_key or os.environ.get("WARDEN_API_KEY")
    if not key:
        raise ApiError(0, "missing_api_key", "pass api_key= or set WARDEN_API_KEY")
    return base.rstrip("/"), key


class _Api:
    def __init__(self, url: str, api_key: str, timeout: float) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=10),
        )

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"cannot reach Warden: {exc}") from exc
        _raise_for(response)
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    async def streamed(
        self,
        path: str,
        body: dict[str, Any],
        on_stdout: OutputHandler | None,
        on_stderr: OutputHandler | None,
    ) -> dict[str, Any]:
        headers = {"Accept": "text/event-stream"}
        async with aconnect_sse(self.http, "POST", path, json=body, headers=headers, timeout=None) as source:
            if not source.response.is_success:
                await source.response.aread()
                _raise_for(source.response)
            async for sse in source.aiter_sse():
                data = json.loads(sse.data) if sse.data else {}
                if sse.event == "stdout" and on_stdout is not None:
                    on_stdout(data.get("text", ""))
                elif sse.event == "stderr" and on_stderr is not None:
                    on_stderr(data.get("text", ""))
                elif sse.event == "result":
                    result: dict[str, Any] = data
                    return result
                elif sse.event == "error":
                    raise ApiError(502, data.get("code", "sandbox_error"), data.get("message", ""))
        raise ApiError(502, "stream_ended", "the sandbox stream ended without a result")


def _execution(data: dict[str, Any]) -> Execution:
    error = data.get("error")
    return Execution(
        text=data.get("value"),
        logs=Logs(
            stdout=[data["stdout"]] if data.get("stdout") else [],
            stderr=[data["stderr"]] if data.get("stderr") else [],
        ),
        results=[Result(r.get("type", ""), r.get("data", "")) for r in data.get("results") or []],
        error=ExecutionError(error.get("name", ""), error.get("value", ""), error.get("traceback", ""))
        if error
        else None,
        context_restarted=bool(data.get("context_restarted")),
    )


class AsyncCommands:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def run(
        self,
        cmd: str,
        *,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str = "/workspace",
        background: bool = False,
        on_stdout: OutputHandler | None = None,
        on_stderr: OutputHandler | None = None,
    ) -> CommandResult:
        body = {"cmd": cmd, "timeout": timeout, "env": env or {}, "cwd": cwd, "background": background}
        path = f"/v1/sandboxes/{self._sb.sandbox_id}/commands"
        if on_stdout or on_stderr:
            data = await self._sb._api.streamed(path, body, on_stdout, on_stderr)
        else:
            data = await self._sb._api.call("POST", path, json=body)
        return CommandResult(
            data.get("exit_code"),
            data.get("stdout", ""),
            data.get("stderr", ""),
            data.get("pid"),
            bool(data.get("timed_out")),
        )


class AsyncFiles:
    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    def _path(self, suffix: str = "") -> str:
        return f"/v1/sandboxes/{self._sb.sandbox_id}/files{suffix}"

    async def read(self, path: str, *, format: str = "text") -> str | bytes:
        data: bytes = await self._sb._api.call("GET", self._path("/content"), params={"path": path})
        return data.decode("utf-8") if format == "text" else data

    async def write(self, path: str, data: str | bytes) -> int:
        raw = data.encode() if isinstance(data, str) else data
        result = await self._sb._api.call("PUT", self._path("/content"), params={"path": path}, content=raw)
        return int(result["size"])

    async def list(self, path: str = "/workspace", depth: int = 1) -> list[EntryInfo]:
        result = await self._sb._api.call("GET", self._path(), params={"path": path, "depth": depth})
        return [EntryInfo(e["name"], e["path"], e["type"], e.get("size", 0)) for e in result["entries"]]

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self._sb._api.call("DELETE", self._path(), params={"path": path, "recursive": recursive})

    async def upload(self, local_path: str, remote_path: str) -> int:
        data = await asyncio.to_thread(_read_bytes, local_path)
        return await self.write(remote_path, data)

    async def download(self, remote_path: str, local_path: str) -> int:
        data = await self.read(remote_path, format="bytes")
        assert isinstance(data, bytes)
        await asyncio.to_thread(_write_bytes, local_path, data)
        return len(data)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class AsyncSandbox:
    """A sandbox on a Warden server, used from async code."""

    def __init__(self, info: dict[str, Any], api: _Api) -> None:
        self._info = info
        self._api = api
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)

    @property
    def sandbox_id(self) -> str:
        return str(self._info["id"])

    @property
    def state(self) -> str:
        return str(self._info.get("state", ""))

    @classmethod
    async def create(
        cls,
        template: str | None = None,
        *,
        metadata: dict[str, str] | None = None,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 300.0,
    ) -> AsyncSandbox:
        api = _Api(*_settings(url, api_key), timeout)
        info = await api.call(
            "POST", "/v1/sandboxes", json={"template": template, "metadata": metadata or {}}
        )
        return cls(info, api)

    @classmethod
    async def connect(
        cls, sandbox_id: str, *, url: str | None = None, api_key: str | None = None, timeout: float = 300.0
    ) -> AsyncSandbox:
        api = _Api(*_settings(url, api_key), timeout)
        return cls(await api.call("GET", f"/v1/sandboxes/{sandbox_id}"), api)

    @classmethod
    async def restore(
        cls, snapshot_id: str, *, url: str | None = None, api_key: str | None = None, timeout: float = 300.0
    ) -> AsyncSandbox:
        api = _Api(*_settings(url, api_key), timeout)
        return cls(await api.call("POST", "/v1/sandboxes", json={"snapshot_id": snapshot_id}), api)

    @classmethod
    async def fork(cls, sandbox: AsyncSandbox | str, count: int = 1, **settings: Any) -> list[AsyncSandbox]:
        source = sandbox if isinstance(sandbox, AsyncSandbox) else await cls.connect(sandbox, **settings)
        infos = await source._api.call(
            "POST", f"/v1/sandboxes/{source.sandbox_id}/fork", json={"count": count}
        )
        return [cls(info, source._api) for info in infos]

    async def run_code(
        self,
        code: str,
        *,
        context: str = "default",
        timeout: float | None = None,
        on_stdout: OutputHandler | None = None,
        on_stderr: OutputHandler | None = None,
    ) -> Execution:
        body = {"code": code, "context": context, "timeout": timeout}
        path = f"/v1/sandboxes/{self.sandbox_id}/code"
        if on_stdout or on_stderr:
            return _execution(await self._api.streamed(path, body, on_stdout, on_stderr))
        return _execution(await self._api.call("POST", path, json=body))

    async def create_context(self, name: str) -> None:
        await self._api.call("POST", f"/v1/sandboxes/{self.sandbox_id}/contexts", json={"name": name})

    async def _verb(self, verb: str) -> None:
        self._info = await self._api.call("POST", f"/v1/sandboxes/{self.sandbox_id}/{verb}")

    async def pause(self) -> None:
        await self._verb("pause")

    async def resume(self) -> None:
        await self._verb("resume")

    async def hibernate(self) -> None:
        await self._verb("hibernate")

    async def create_snapshot(self) -> str:
        """Returns the snapshot id; `AsyncSandbox.restore(id)` starts a sandbox from it."""
        snap = await self._api.call("POST", f"/v1/sandboxes/{self.sandbox_id}/snapshots")
        return str(snap["id"])

    async def refresh(self) -> dict[str, Any]:
        self._info = await self._api.call("GET", f"/v1/sandboxes/{self.sandbox_id}")
        return self._info

    async def kill(self) -> None:
        await self._api.call("DELETE", f"/v1/sandboxes/{self.sandbox_id}")

    async def close(self) -> None:
        """Close the HTTP client (the sandbox keeps running; `kill` removes it)."""
        await self._api.http.aclose()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        try:
            await self.kill()
        finally:
            await self.close()


class _Loop:
    """One event loop on a daemon thread, shared by every sync `Sandbox` of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def run(cls, coro: Coroutine[Any, Any, T]) -> T:
        with cls._lock:
            if cls._loop is None:
                cls._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=cls._loop.run_forever, name="warden-sandbox-loop", daemon=True
                ).start()
        return asyncio.run_coroutine_threadsafe(coro, cls._loop).result()


class _SyncProxy:
    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return _Loop.run(attr(*args, **kwargs))

        return call


class Sandbox:
    """The same as `AsyncSandbox`, for ordinary (blocking) code."""

    def __init__(self, inner: AsyncSandbox) -> None:
        self._inner = inner
        self.commands: Any = _SyncProxy(inner.commands)
        self.files: Any = _SyncProxy(inner.files)

    @property
    def sandbox_id(self) -> str:
        return self._inner.sandbox_id

    @property
    def state(self) -> str:
        return self._inner.state

    @classmethod
    def create(cls, template: str | None = None, **kwargs: Any) -> Sandbox:
        return cls(_Loop.run(AsyncSandbox.create(template, **kwargs)))

    @classmethod
    def connect(cls, sandbox_id: str, **kwargs: Any) -> Sandbox:
        return cls(_Loop.run(AsyncSandbox.connect(sandbox_id, **kwargs)))

    @classmethod
    def restore(cls, snapshot_id: str, **kwargs: Any) -> Sandbox:
        return cls(_Loop.run(AsyncSandbox.restore(snapshot_id, **kwargs)))

    @classmethod
    def fork(cls, sandbox: Sandbox | str, count: int = 1, **kwargs: Any) -> list[Sandbox]:
        source = sandbox._inner if isinstance(sandbox, Sandbox) else sandbox
        return [cls(s) for s in _Loop.run(AsyncSandbox.fork(source, count, **kwargs))]

    def run_code(self, code: str, **kwargs: Any) -> Execution:
        return _Loop.run(self._inner.run_code(code, **kwargs))

    def create_context(self, name: str) -> None:
        _Loop.run(self._inner.create_context(name))

    def pause(self) -> None:
        _Loop.run(self._inner.pause())

    def resume(self) -> None:
        _Loop.run(self._inner.resume())

    def hibernate(self) -> None:
        _Loop.run(self._inner.hibernate())

    def create_snapshot(self) -> str:
        return _Loop.run(self._inner.create_snapshot())

    def kill(self) -> None:
        _Loop.run(self._inner.kill())

    def close(self) -> None:
        _Loop.run(self._inner.close())

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.kill()
        finally:
            self.close()
