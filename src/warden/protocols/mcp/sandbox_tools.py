"""The sandbox as MCP tools: create, run code, run a command, read and write files, snapshot,
list and destroy. Each calls the ``SandboxManager``; printed output streams as progress."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from warden.errors import InvalidInput
from warden.protocols.mcp._common import PrincipalOf, guarded

if TYPE_CHECKING:
    from warden.sandbox.manager import SandboxManager, SandboxRecord, SnapshotRecord

MAX_FILE_BYTES = 10 * 2**20
"""The largest file a tool call reads or writes (it travels inside one JSON-RPC message)."""

SandboxId = Annotated[str, Field(min_length=1, max_length=64, description="The id sandbox_create returned.")]
Path = Annotated[str, Field(min_length=1, max_length=4096, description="A path inside the sandbox.")]
Timeout = Annotated[
    float | None, Field(gt=0, le=3600, description="Seconds; the template's limit by default.")
]


def _sandbox(r: SandboxRecord) -> dict[str, Any]:
    return {"id": r.id, "template": r.template, "state": r.state.value, "metadata": r.metadata}


def _snapshot(s: SnapshotRecord) -> dict[str, Any]:
    return {"id": s.id, "sandbox_id": s.sandbox_id, "template": s.template, "size_bytes": s.size_bytes}


class _Progress:
    """Printed output as progress notifications (sent only when the client asked for them)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.count = 0

    async def __call__(self, stream: str, text: str) -> None:
        self.count += 1
        await self.ctx.report_progress(self.count, message=f"{stream}: {text[-1000:]}")


def add_sandbox_tools(server: MCPServer, manager: SandboxManager, principal_of: PrincipalOf) -> None:
    """Register the tools on ``server``; every call is scoped to the caller's tenant."""

    async def sandbox_create(
        ctx: Context,
        template: Annotated[
            str | None, Field(max_length=64, description="Template name; the default template when omitted.")
        ] = None,
        snapshot_id: Annotated[
            str | None, Field(max_length=64, description="Restore this snapshot instead.")
        ] = None,
    ) -> CallToolResult:
        """Start a sandbox (a gVisor micro-VM with Python); returns its id for the other sandbox tools."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:write")
            if snapshot_id:
                return _sandbox(await manager.restore(caller.tenant_id, snapshot_id))
            return _sandbox(await manager.create(caller.tenant_id, template))

        return await guarded("sandbox_create", op)

    async def sandbox_run_code(
        ctx: Context,
        sandbox_id: SandboxId,
        code: Annotated[str, Field(max_length=1_000_000, description="Python source.")],
        context: Annotated[
            str,
            Field(
                pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                description="Interpreter context; state persists within it.",
            ),
        ] = "default",
        timeout: Timeout = None,
    ) -> CallToolResult:
        """Run Python in a stateful context (like a notebook kernel): variables survive between calls.
        Returns stdout, stderr, the last expression's value and any error."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:write")
            return await manager.run_code(
                caller.tenant_id, sandbox_id, code, context=context, timeout=timeout, on_output=_Progress(ctx)
            )

        return await guarded("sandbox_run_code", op)

    async def sandbox_run_command(
        ctx: Context,
        sandbox_id: SandboxId,
        command: Annotated[str, Field(min_length=1, max_length=100_000, description="A shell command line.")],
        cwd: Annotated[str, Field(max_length=4096)] = "/workspace",
        timeout: Timeout = None,
    ) -> CallToolResult:
        """Run a shell command; returns its exit code, stdout and stderr."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:write")
            return await manager.run_command(
                caller.tenant_id, sandbox_id, command, cwd=cwd, timeout=timeout, on_output=_Progress(ctx)
            )

        return await guarded("sandbox_run_command", op)

    async def sandbox_read_file(ctx: Context, sandbox_id: SandboxId, path: Path) -> CallToolResult:
        """Read a file: UTF-8 text as is, anything else base64-encoded (``encoding`` says which)."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:read")
            data = await manager.read_file(caller.tenant_id, sandbox_id, path, MAX_FILE_BYTES)
            try:
                return {"path": path, "encoding": "utf-8", "content": data.decode("utf-8")}
            except UnicodeDecodeError:
                return {"path": path, "encoding": "base64", "content": base64.b64encode(data).decode()}

        return await guarded("sandbox_read_file", op)

    async def sandbox_write_file(
        ctx: Context,
        sandbox_id: SandboxId,
        path: Path,
        content: Annotated[str, Field(max_length=2 * MAX_FILE_BYTES)],
        encoding: Literal["utf-8", "base64"] = "utf-8",
    ) -> CallToolResult:
        """Create or replace a file (parent folders are created)."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:write")
            if encoding == "base64":
                try:
                    data = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise InvalidInput("content is not valid base64", code="invalid_base64") from exc
            else:
                data = content.encode("utf-8")
            if len(data) > MAX_FILE_BYTES:
                raise InvalidInput(
                    f"the file is {len(data)} bytes; the limit is {MAX_FILE_BYTES}", code="file_too_large"
                )
            size = await manager.write_file(caller.tenant_id, sandbox_id, path, data)
            return {"path": path, "size": size}

        return await guarded("sandbox_write_file", op)

    async def sandbox_snapshot(ctx: Context, sandbox_id: SandboxId) -> CallToolResult:
        """Snapshot memory and files as they are now; sandbox_create(snapshot_id=…) restores it."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:write")
            return _snapshot(await manager.create_snapshot(caller.tenant_id, sandbox_id))

        return await guarded("sandbox_snapshot", op)

    async def sandbox_list(ctx: Context) -> CallToolResult:
        """The caller's live sandboxes."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:read")
            return {"sandboxes": [_sandbox(r) for r in await manager.list_sandboxes(caller.tenant_id)]}

        return await guarded("sandbox_list", op)

    async def sandbox_destroy(ctx: Context, sandbox_id: SandboxId) -> CallToolResult:
        """Stop a sandbox and delete its files (its snapshots stay)."""

        async def op() -> dict[str, Any]:
            caller = principal_of(ctx)
            caller.require("sandboxes:write")
            await manager.destroy(caller.tenant_id, sandbox_id)
            return {"id": sandbox_id, "destroyed": True}

        return await guarded("sandbox_destroy", op)

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    closed = ToolAnnotations(open_world_hint=False)
    server.add_tool(sandbox_create, annotations=closed)
    server.add_tool(sandbox_run_code, annotations=closed)
    server.add_tool(sandbox_run_command, annotations=closed)
    server.add_tool(sandbox_read_file, annotations=read_only)
    server.add_tool(
        sandbox_write_file, annotations=ToolAnnotations(idempotent_hint=True, open_world_hint=False)
    )
    server.add_tool(sandbox_snapshot, annotations=closed)
    server.add_tool(sandbox_list, annotations=read_only)
    server.add_tool(
        sandbox_destroy,
        annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    )
