"""Sandbox routes: create (cold, from a warm pool, or from a snapshot), run code and commands,
files, pause/resume/hibernate, snapshots and forks. Verbs follow the names E2B users know."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from warden.api._auth import principal
from warden.api._sse import EventStreamResponse, json_frame
from warden.api.schemas import ErrorBody, iso
from warden.errors import WardenError
from warden.sandbox.backend import SandboxError
from warden.service.keys import Principal

if TYPE_CHECKING:
    from warden.sandbox.manager import SandboxManager, SandboxRecord, SnapshotRecord

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])
Caller = Annotated[Principal, Depends(principal)]
_errors: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorBody} for c in (400, 401, 403, 404, 409, 413, 422, 502, 503)
}
MAX_FILE_BYTES = 100 * 2**20


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSandbox(_Body):
    template: str | None = Field(default=None, max_length=64)
    snapshot_id: str | None = Field(default=None, max_length=64, description="Restore this snapshot instead.")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)


class SandboxView(BaseModel):
    id: str
    template: str
    backend: str
    state: str
    session_id: str | None
    metadata: dict[str, Any]
    created_at: str | None
    last_used_at: str | None
    expires_at: str | None

    @classmethod
    def of(cls, r: SandboxRecord) -> SandboxView:
        return cls(
            id=r.id,
            template=r.template,
            backend=r.backend,
            state=r.state.value,
            session_id=r.session_id,
            metadata=r.metadata,
            created_at=iso(r.created_at),
            last_used_at=iso(r.last_used_at),
            expires_at=iso(r.expires_at),
        )


class SnapshotView(BaseModel):
    id: str
    sandbox_id: str
    template: str
    size_bytes: int
    created_at: str | None

    @classmethod
    def of(cls, s: SnapshotRecord) -> SnapshotView:
        return cls(
            id=s.id,
            sandbox_id=s.sandbox_id,
            template=s.template,
            size_bytes=s.size_bytes,
            created_at=iso(s.created_at),
        )


class RunCode(_Body):
    code: str = Field(max_length=1_000_000)
    context: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    timeout: float | None = Field(default=None, gt=0, le=3600)


class RunCommand(_Body):
    cmd: str = Field(min_length=1, max_length=100_000)
    timeout: float | None = Field(default=None, gt=0, le=3600)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)
    cwd: str = Field(default="/workspace", max_length=4096)
    background: bool = False


class Fork(_Body):
    count: int = Field(default=1, ge=1, le=64)


class ContextBody(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")


def _manager(request: Request) -> SandboxManager:
    manager: SandboxManager | None = request.app.state.runtime.sandboxes
    if manager is None:
        raise SandboxError(
            "sandboxes are not available on this server: install runsc (gVisor) or bubblewrap; see `warden doctor`",
            code="sandboxes_unavailable",
        )
    return manager


async def _respond(
    request: Request, manager: SandboxManager, caller: Principal, sandbox_id: str, result_of: Any
) -> Any:
    """The result as JSON, or with ``Accept: text/event-stream`` the output as it is printed
    and the result last (access is checked before the stream starts)."""
    if "text/event-stream" not in request.headers.get("accept", ""):
        return await result_of()
    await manager.get(caller.tenant_id, sandbox_id)
    return _stream(result_of)


@router.post("", status_code=201, response_model=SandboxView, responses=_errors)
async def create_sandbox(body: CreateSandbox, request: Request, caller: Caller) -> SandboxView:
    """A running sandbox: claimed from the template's warm pool when one waits, or restored from
    ``snapshot_id``."""
    caller.require("sandboxes:write")
    manager = _manager(request)
    if body.snapshot_id:
        return SandboxView.of(await manager.restore(caller.tenant_id, body.snapshot_id))
    return SandboxView.of(await manager.create(caller.tenant_id, body.template, metadata=body.metadata))


@router.get("", response_model=list[SandboxView], responses=_errors)
async def list_sandboxes(request: Request, caller: Caller) -> list[SandboxView]:
    caller.require("sandboxes:read")
    return [SandboxView.of(r) for r in await _manager(request).list_sandboxes(caller.tenant_id)]


@router.get("/{sandbox_id}", response_model=SandboxView, responses=_errors)
async def get_sandbox(sandbox_id: str, request: Request, caller: Caller) -> SandboxView:
    caller.require("sandboxes:read")
    return SandboxView.of(await _manager(request).get(caller.tenant_id, sandbox_id))


class SandboxResources(BaseModel):
    template: str
    limits: dict[str, Any]
    """The template's ``cpus``, ``memory_mb``, ``pids``, ``disk_mb``, ``output_bytes``, ``timeout``."""
    egress: bool
    allow: list[str]
    """Where the egress proxy lets the sandbox connect (empty when ``egress`` is off)."""


@router.get("/{sandbox_id}/resources", response_model=SandboxResources, responses=_errors)
async def sandbox_resources(sandbox_id: str, request: Request, caller: Caller) -> SandboxResources:
    """The limits the sandbox runs under, from its template (read without waking it)."""
    caller.require("sandboxes:read")
    manager = _manager(request)
    record = await manager.get(caller.tenant_id, sandbox_id)
    template = manager.template(record.template)
    return SandboxResources(
        template=template.name,
        limits=template.limits.model_dump(),
        egress=template.network.egress,
        allow=template.network.allow if template.network.egress else [],
    )


@router.delete("/{sandbox_id}", status_code=204, responses=_errors)
async def delete_sandbox(sandbox_id: str, request: Request, caller: Caller) -> Response:
    caller.require("sandboxes:write")
    await _manager(request).destroy(caller.tenant_id, sandbox_id)
    return Response(status_code=204)


def _stream(result_of: Any) -> EventStreamResponse:
    """Run an operation, sending its output as ``stdout``/``stderr`` events and its result last."""
    import asyncio

    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def on_output(stream: str, text: str) -> None:
        await queue.put((stream, {"text": text}))

    async def frames() -> AsyncIterator[bytes]:
        async def run() -> None:
            try:
                await queue.put(("result", await result_of(on_output)))
            except WardenError as exc:
                await queue.put(("error", exc.to_dict()))

        task = asyncio.create_task(run())
        try:
            while True:
                kind, data = await queue.get()
                yield json_frame(data, event=kind)
                if kind in ("result", "error"):
                    return
        finally:
            if not task.done():
                task.cancel()

    return EventStreamResponse(frames())


@router.post("/{sandbox_id}/code", responses={200: {"content": {"text/event-stream": {}}}, **_errors})
async def run_code(sandbox_id: str, body: RunCode, request: Request, caller: Caller) -> Any:
    """Run Python in a stateful context (like a Jupyter kernel). With ``Accept: text/event-stream``
    the output streams as it is printed and the result comes last."""
    caller.require("sandboxes:write")
    manager = _manager(request)

    async def result_of(on_output: Any = None) -> dict[str, Any]:
        return await manager.run_code(
            caller.tenant_id,
            sandbox_id,
            body.code,
            context=body.context,
            timeout=body.timeout,
            on_output=on_output,
        )

    return await _respond(request, manager, caller, sandbox_id, result_of)


@router.post("/{sandbox_id}/commands", responses={200: {"content": {"text/event-stream": {}}}, **_errors})
async def run_command(sandbox_id: str, body: RunCommand, request: Request, caller: Caller) -> Any:
    """Run a shell command; ``background`` returns its pid at once."""
    caller.require("sandboxes:write")
    manager = _manager(request)

    async def result_of(on_output: Any = None) -> dict[str, Any]:
        return await manager.run_command(
            caller.tenant_id,
            sandbox_id,
            body.cmd,
            timeout=body.timeout,
            env=body.env,
            cwd=body.cwd,
            background=body.background,
            on_output=on_output,
        )

    return await _respond(request, manager, caller, sandbox_id, result_of)


@router.get("/{sandbox_id}/files", responses=_errors)
async def list_files(
    sandbox_id: str,
    request: Request,
    caller: Caller,
    path: str = Query(default="/workspace", max_length=4096),
    depth: int = Query(default=1, ge=1, le=10),
) -> dict[str, Any]:
    caller.require("sandboxes:read")
    return await _manager(request).guest_call(
        caller.tenant_id, sandbox_id, "file_list", path=path, depth=depth
    )


@router.get(
    "/{sandbox_id}/files/content", responses={200: {"content": {"application/octet-stream": {}}}, **_errors}
)
async def download_file(
    sandbox_id: str, request: Request, caller: Caller, path: str = Query(max_length=4096)
) -> Response:
    caller.require("sandboxes:read")
    data = await _manager(request).read_file(caller.tenant_id, sandbox_id, path, MAX_FILE_BYTES)
    # The name comes from the caller: keep header-safe characters only.
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.rsplit("/", 1)[-1])[:200] or "file"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.put("/{sandbox_id}/files/content", responses=_errors)
async def upload_file(
    sandbox_id: str, request: Request, caller: Caller, path: str = Query(max_length=4096)
) -> dict[str, Any]:
    """Write the raw request body to ``path`` (created or replaced)."""
    caller.require("sandboxes:write")
    data = await request.body()
    size = await _manager(request).write_file(caller.tenant_id, sandbox_id, path, data)
    return {"path": path, "size": size}


@router.delete("/{sandbox_id}/files", responses=_errors)
async def remove_file(
    sandbox_id: str,
    request: Request,
    caller: Caller,
    path: str = Query(max_length=4096),
    recursive: bool = False,
) -> dict[str, Any]:
    caller.require("sandboxes:write")
    return await _manager(request).guest_call(
        caller.tenant_id, sandbox_id, "file_remove", path=path, recursive=recursive
    )


@router.post("/{sandbox_id}/contexts", status_code=201, responses=_errors)
async def create_context(
    sandbox_id: str, body: ContextBody, request: Request, caller: Caller
) -> dict[str, Any]:
    caller.require("sandboxes:write")
    return await _manager(request).guest_call(caller.tenant_id, sandbox_id, "context_create", name=body.name)


@router.get("/{sandbox_id}/contexts", responses=_errors)
async def list_contexts(sandbox_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    caller.require("sandboxes:read")
    return await _manager(request).guest_call(caller.tenant_id, sandbox_id, "context_list")


@router.post("/{sandbox_id}/pause", response_model=SandboxView, responses=_errors)
async def pause(sandbox_id: str, request: Request, caller: Caller) -> SandboxView:
    """Freeze every process; the next use (or ``/resume``) thaws it."""
    caller.require("sandboxes:write")
    return SandboxView.of(await _manager(request).pause(caller.tenant_id, sandbox_id))


@router.post("/{sandbox_id}/resume", response_model=SandboxView, responses=_errors)
async def resume(sandbox_id: str, request: Request, caller: Caller) -> SandboxView:
    caller.require("sandboxes:write")
    return SandboxView.of(await _manager(request).resume(caller.tenant_id, sandbox_id))


@router.post("/{sandbox_id}/hibernate", response_model=SandboxView, responses=_errors)
async def hibernate(sandbox_id: str, request: Request, caller: Caller) -> SandboxView:
    """Save memory to disk and free it; the next use restores it transparently."""
    caller.require("sandboxes:write")
    manager = _manager(request)
    record = await manager.get(caller.tenant_id, sandbox_id)
    if not await manager.hibernate(record):
        raise SandboxError(
            f"sandbox {sandbox_id} cannot hibernate now ({record.state.value})", code="not_supported"
        )
    return SandboxView.of(await manager.get(caller.tenant_id, sandbox_id))


@router.post("/{sandbox_id}/snapshots", status_code=201, response_model=SnapshotView, responses=_errors)
async def create_snapshot(sandbox_id: str, request: Request, caller: Caller) -> SnapshotView:
    """Memory and files, as they are now; the sandbox keeps running."""
    caller.require("sandboxes:write")
    return SnapshotView.of(await _manager(request).create_snapshot(caller.tenant_id, sandbox_id))


@router.get("/{sandbox_id}/snapshots", response_model=list[SnapshotView], responses=_errors)
async def list_snapshots(sandbox_id: str, request: Request, caller: Caller) -> list[SnapshotView]:
    caller.require("sandboxes:read")
    manager = _manager(request)
    await manager.get(caller.tenant_id, sandbox_id)
    return [SnapshotView.of(s) for s in await manager.list_snapshots(caller.tenant_id, sandbox_id)]


@router.post("/{sandbox_id}/fork", status_code=201, response_model=list[SandboxView], responses=_errors)
async def fork(sandbox_id: str, body: Fork, request: Request, caller: Caller) -> list[SandboxView]:
    """``count`` new sandboxes that continue from this one's present state."""
    caller.require("sandboxes:write")
    return [SandboxView.of(r) for r in await _manager(request).fork(caller.tenant_id, sandbox_id, body.count)]
