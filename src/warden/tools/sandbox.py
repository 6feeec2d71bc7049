"""Agent tools that act in the session's sandbox: `python` (stateful, like a notebook), `shell`,
`read_file` and `write_file`. The sandbox is claimed on first use and kept with the session, so
a resumed task finds its files and interpreter state as they were (invariant 5)."""

from __future__ import annotations

import json
from typing import Any

from warden.errors import WardenError
from warden.tools.base import ToolContext, ToolResult, tool

_NO_SANDBOX = "sandboxes are not available on this server (install runsc or bubblewrap)"


async def _sandbox_id(ctx: ToolContext) -> str:
    owner = ctx.session_id or ctx.task_id
    record = await ctx.sandboxes.for_session(ctx.tenant_id, owner)
    return str(record.id)


def _summary(result: dict[str, Any]) -> str:
    parts = []
    if result.get("stdout"):
        parts.append(result["stdout"].rstrip("\n"))
    if result.get("stderr"):
        parts.append("[stderr]\n" + result["stderr"].rstrip("\n"))
    if result.get("value") is not None:
        parts.append(f"[value] {result['value']}")
    for item in result.get("results") or []:
        parts.append(f"[{item.get('type', 'result')}: {len(item.get('data', ''))} base64 characters]")
    error = result.get("error")
    if error:
        parts.append(error.get("traceback") or f"{error.get('name')}: {error.get('value')}")
    if result.get("stdout_truncated"):
        parts.append("[output truncated]")
    if result.get("context_restarted"):
        parts.append("[the interpreter was restarted: earlier variables are gone]")
    if "exit_code" in result:
        parts.append(f"[exit code {result['exit_code']}]" if not result.get("timed_out") else "[timed out]")
    return "\n".join(parts) or "(no output)"


async def _stream(ctx: ToolContext) -> Any:
    async def on_output(_stream: str, text: str) -> None:
        await ctx.emit_output(text)

    return on_output


@tool(idempotent=False, side_effects=True)
async def python(code: str, ctx: ToolContext, timeout: float | None = None) -> ToolResult:
    """Run Python in this session's sandbox. State persists between calls like a notebook; the
    last expression's value is returned; numpy, pandas and matplotlib are available."""
    if ctx.sandboxes is None:
        return ToolResult(_NO_SANDBOX, is_error=True)
    try:
        sandbox_id = await _sandbox_id(ctx)
        result = await ctx.sandboxes.run_code(
            ctx.tenant_id, sandbox_id, code, timeout=timeout, on_output=await _stream(ctx)
        )
    except WardenError as exc:
        return ToolResult(f"sandbox error: {exc.message}", is_error=True)
    data = {k: v for k, v in result.items() if k != "results"}
    data["images"] = len(result.get("results") or [])
    return ToolResult(_summary(result), is_error=bool(result.get("error")), data=data)


@tool(idempotent=False, side_effects=True)
async def shell(command: str, ctx: ToolContext, timeout: float | None = None) -> ToolResult:
    """Run a shell command in this session's sandbox (working directory /workspace)."""
    if ctx.sandboxes is None:
        return ToolResult(_NO_SANDBOX, is_error=True)
    try:
        sandbox_id = await _sandbox_id(ctx)
        result = await ctx.sandboxes.run_command(
            ctx.tenant_id, sandbox_id, command, timeout=timeout, on_output=await _stream(ctx)
        )
    except WardenError as exc:
        return ToolResult(f"sandbox error: {exc.message}", is_error=True)
    return ToolResult(_summary(result), is_error=result.get("exit_code") != 0, data=result)


@tool(idempotent=True, side_effects=False)
async def read_file(path: str, ctx: ToolContext) -> ToolResult:
    """Read a text file from this session's sandbox workspace."""
    if ctx.sandboxes is None:
        return ToolResult(_NO_SANDBOX, is_error=True)
    try:
        data: bytes = await ctx.sandboxes.read_file(ctx.tenant_id, await _sandbox_id(ctx), path, 1_000_000)
    except WardenError as exc:
        return ToolResult(f"cannot read {path}: {exc.message}", is_error=True)
    text = data.decode("utf-8", errors="replace")
    return ToolResult(text, data={"path": path, "bytes": len(data)})


@tool(idempotent=True, side_effects=True)
async def write_file(path: str, content: str, ctx: ToolContext) -> ToolResult:
    """Write a text file in this session's sandbox workspace (created or replaced)."""
    if ctx.sandboxes is None:
        return ToolResult(_NO_SANDBOX, is_error=True)
    try:
        size = await ctx.sandboxes.write_file(ctx.tenant_id, await _sandbox_id(ctx), path, content.encode())
    except WardenError as exc:
        return ToolResult(f"cannot write {path}: {exc.message}", is_error=True)
    return ToolResult(
        f"wrote {size} bytes to {path}", data=json.loads(json.dumps({"path": path, "bytes": size}))
    )


SANDBOX_TOOLS = (python, shell, read_file, write_file)
