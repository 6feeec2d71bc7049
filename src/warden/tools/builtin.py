"""Built-in tools that need no sandbox or network: the clock, arithmetic, session notes and a
cancellable wait that streams progress (handy for demos and for testing cancellation)."""

from __future__ import annotations

import ast
import asyncio
import math
import operator
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warden.tools.base import FunctionTool, ToolContext, ToolResult, tool

_BIN_OPS: dict[type[ast.operator], Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type[ast.unaryop], Any] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Any] = {"sqrt": math.sqrt, "abs": abs, "round": round, "log": math.log, "exp": math.exp}
_CONSTS = {"pi": math.pi, "e": math.e}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTS:
        return _CONSTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6):
            raise ValueError("exponent too large")
        return _BIN_OPS[type(node.op)](left, right)  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCS
        and not node.keywords
        and len(node.args) <= 2
    ):
        return _FUNCS[node.func.id](*(_evaluate(a) for a in node.args))  # type: ignore[no-any-return]
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


@tool(idempotent=True, side_effects=False)
def calculator(expression: str) -> ToolResult:
    """Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt, abs, round, log, exp, pi, e)."""
    if len(expression) > 500:
        return ToolResult("expression too long (500 characters at most)", is_error=True)
    try:
        value = _evaluate(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError) as exc:
        return ToolResult(f"cannot evaluate {expression!r}: {exc}", is_error=True)
    return ToolResult(str(value), data={"expression": expression, "value": value})


@tool(idempotent=True, side_effects=False)
def current_time(timezone: str = "UTC") -> ToolResult:
    """The current date and time in an IANA time zone such as 'UTC' or 'Europe/Paris'."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ToolResult(f"unknown time zone {timezone!r}", is_error=True)
    now = datetime.now(zone)
    return ToolResult(now.isoformat(timespec="seconds"), data={"timezone": timezone, "iso": now.isoformat()})


def _notes_dir(ctx: ToolContext) -> Path:
    owner = ctx.session_id or ctx.task_id
    return Path(ctx.home) / "notes" / ctx.tenant_id / owner


def _slug(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
    return slug or "note"


@tool(idempotent=True, side_effects=True)
def notes_write(title: str, body: str, ctx: ToolContext) -> ToolResult:
    """Save a short note (kept with the session) under a title; writing the same title replaces it."""
    if len(body) > 100_000:
        return ToolResult("note too long (100,000 characters at most)", is_error=True)
    folder = _notes_dir(ctx)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_slug(title)}.md"
    path.write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    return ToolResult(f"saved note {title!r}", data={"title": title, "chars": len(body)})


@tool(idempotent=True, side_effects=False)
def notes_read(title: str, ctx: ToolContext) -> ToolResult:
    """Read a note saved earlier in this session."""
    path = _notes_dir(ctx) / f"{_slug(title)}.md"
    if not path.is_file():
        return ToolResult(f"no note titled {title!r}", is_error=True)
    return ToolResult(path.read_text(encoding="utf-8"))


@tool(idempotent=True, side_effects=False)
async def wait(seconds: float, ctx: ToolContext) -> ToolResult:
    """Wait for a number of seconds (at most 300), reporting progress each second."""
    if not 0 <= seconds <= 300:
        return ToolResult("seconds must be between 0 and 300", is_error=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(1.0, left))
        await ctx.emit_output(f"waited {seconds - max(0.0, deadline - loop.time()):.1f}s\n")
    return ToolResult(f"waited {seconds} seconds")


BUILTIN_TOOLS: tuple[FunctionTool, ...] = (calculator, current_time, notes_write, notes_read, wait)
