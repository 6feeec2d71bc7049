"""The tool interface: a name, a description, a JSON Schema for arguments, safety flags, and an
async call that may stream output. `FunctionTool` turns a typed Python function into one."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import ConfigDict, ValidationError, create_model


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool returns: text for the model, optionally structured data alongside."""

    content: str
    is_error: bool = False
    data: Any = None
    """JSON-serialisable structured output, kept in the journal and events."""


async def _discard(_text: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a running tool may know and do besides its arguments."""

    task_id: str
    tenant_id: str
    session_id: str | None
    call_id: str
    emit_output: Callable[[str], Awaitable[None]] = _discard
    """Stream a piece of output (stdout, progress) to the task's live events."""
    home: str = ".warden"
    """Warden's data folder, for tools that keep files."""
    sandboxes: Any = None
    """The `warden.sandbox.SandboxManager`, for tools that run code; None when sandboxes are off."""


@runtime_checkable
class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON Schema (an object schema) of the arguments."""
    idempotent: bool
    """Safe to run again after an interruption left its outcome unknown."""
    side_effects: bool
    """Changes something outside the task (sends, writes, pays); governance treats these with care."""

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


@dataclass
class FunctionTool:
    """A tool backed by a Python function; arguments are validated by its type hints.

    The function may be sync (run in a thread so it cannot block the event loop) or async, may
    accept a ``ctx: ToolContext`` parameter, and may return a `ToolResult`, a string, or any
    JSON-serialisable value.
    """

    func: Callable[..., Any]
    name: str
    description: str
    idempotent: bool = False
    side_effects: bool = True
    parameters: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        sig = inspect.signature(self.func)
        fields: dict[str, Any] = {}
        self._wants_ctx = False
        for pname, param in sig.parameters.items():
            if pname == "ctx":
                self._wants_ctx = True
                continue
            annotation = param.annotation if param.annotation is not inspect.Parameter.empty else Any
            default = param.default if param.default is not inspect.Parameter.empty else ...
            fields[pname] = (annotation, default)
        self._model = create_model(f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        schema = self._model.model_json_schema()
        schema.pop("title", None)
        self.parameters = schema

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Raises `pydantic.ValidationError` on arguments the function would not accept."""
        return dict(self._model.model_validate(arguments))

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        try:
            kwargs = self.validate(arguments)
        except ValidationError as exc:
            return ToolResult(f"invalid arguments: {exc}", is_error=True)
        if self._wants_ctx:
            kwargs["ctx"] = ctx
        if inspect.iscoroutinefunction(self.func):
            value = await self.func(**kwargs)
        else:
            value = await asyncio.to_thread(self.func, **kwargs)
        return as_result(value)


def as_result(value: Any) -> ToolResult:
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, str):
        return ToolResult(value)
    import json

    return ToolResult(json.dumps(value, default=str, ensure_ascii=False), data=value)


def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    idempotent: bool = False,
    side_effects: bool = True,
) -> Callable[[Callable[..., Any]], FunctionTool]:
    """Decorator: ``@tool(idempotent=True, side_effects=False)`` over a typed function."""

    def wrap(func: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            func=func,
            name=name or func.__name__,
            description=(description or inspect.getdoc(func) or "").strip(),
            idempotent=idempotent,
            side_effects=side_effects,
        )

    return wrap
