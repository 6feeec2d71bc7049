"""The agent loop: model → tool calls → observations, until the model answers without calling
a tool. Every model response and tool result is journalled and every step checkpointed, so a
resumed attempt replays what is done and runs only what is not (invariant 3)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jsonschema

from warden.agent.journal import EntryStatus, Journal
from warden.agent.state import LoopState, latest_checkpoint, save_checkpoint
from warden.config import AgentSpec, EventsConfig
from warden.events.log import EventLog
from warden.events.types import EventType
from warden.governance.gate import CallContext, Gate, Verdict
from warden.models.base import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from warden.queue.lease import Lease
from warden.queue.sql import SqlTaskQueue
from warden.store.tasks import TaskStatus
from warden.tools.base import FunctionTool, Tool, ToolContext, ToolResult

MAX_TOOL_CONTENT = 100_000
"""Characters of one tool result the model sees; the rest is cut with a note."""


class Phase(StrEnum):
    """What the loop is doing now; the worker's shutdown treats phases differently."""

    IDLE = "idle"
    MODEL = "model"
    TOOLS = "tools"


@dataclass(frozen=True, slots=True)
class TaskInput:
    """What the loop starts from."""

    text: str
    history: list[Message]
    """Earlier turns of the session (no system message)."""


class _Coalescer:
    """Buffers streamed text and writes it as one event per interval, so storage holds a few
    events per second of streaming rather than one per token."""

    def __init__(self, flush: Callable[[str], Awaitable[None]], interval: float, max_chars: int) -> None:
        self._flush = flush
        self._interval = interval
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._since = time.monotonic()

    async def add(self, text: str) -> None:
        if not self._parts:
            self._since = time.monotonic()
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._max_chars or time.monotonic() - self._since >= self._interval:
            await self.drain()

    async def drain(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            await self._flush(text)


class AgentLoop:
    """Runs one attempt of one task under one lease."""

    def __init__(
        self,
        *,
        lease: Lease,
        spec: AgentSpec,
        provider: ModelProvider,
        tools: dict[str, Tool],
        gate: Gate,
        log: EventLog,
        queue: SqlTaskQueue,
        events_config: EventsConfig,
        home: str,
    ) -> None:
        self.lease = lease
        self.task_id = lease.task_id
        self.spec = spec
        self.provider = provider
        self.tools = tools
        self.gate = gate
        self.log = log
        self.queue = queue
        self.events_config = events_config
        self.home = home
        self.journal = Journal(log.db, lease.task_id)
        self.phase = Phase.IDLE
        self.state: LoopState | None = None
        self._tool_specs = tuple(ToolSpec(t.name, t.description, t.parameters) for t in tools.values())

    # -- entry -----------------------------------------------------------------------------

    async def run(self, task_input: TaskInput) -> None:
        """Run to completion (or until cancelled / a limit / a failure raises)."""
        await self.journal.load()
        state = await latest_checkpoint(self.log.db, self.task_id)
        if state is None:
            messages = [Message("system", self.spec.instructions)] if self.spec.instructions else []
            messages += task_input.history
            messages.append(Message("user", task_input.text))
            state = LoopState(step=0, messages=messages)
        self.state = state
        while True:
            response = await self._model_turn(state)
            state.messages.append(response.message)
            state.add_usage(response.model or self.provider.name, response.usage)
            if not response.message.tool_calls:
                await self._complete(state, response.message.content)
                return
            results = await self._tool_turn(state.step, response.message.tool_calls)
            state.messages.extend(results)
            state.step += 1
            async with self.log.transaction() as tx:
                await self.queue.fence(tx, self.lease)
                await save_checkpoint(tx, self.task_id, state)
                await tx.emit(self.task_id, EventType.TASK_CHECKPOINT, {"step": state.step})

    def _ctx(self, state: LoopState) -> CallContext:
        return CallContext(
            task_id=self.task_id,
            tenant_id=self.lease.tenant_id,
            agent=self.spec.name,
            step=state.step,
            usage=state.total_usage,
            limits=self.spec.limits,
        )

    # -- model -----------------------------------------------------------------------------

    async def _model_turn(self, state: LoopState) -> ModelResponse:
        key = f"model:{state.step}"
        entry = self.journal.get(key)
        if entry is not None and entry.status is EntryStatus.FINISHED:
            return ModelResponse.from_dict(entry.data)
        ctx = self._ctx(state)
        request = ModelRequest(
            messages=tuple(state.messages),
            tools=self._tool_specs,
            max_tokens=self.spec.limits.max_output_tokens,
            metadata={"task_id": self.task_id, "step": str(state.step)},
        )
        step = state.step

        async def flush(text: str) -> None:
            async with self.log.transaction() as tx:
                await self.queue.fence(tx, self.lease)
                await tx.emit(self.task_id, EventType.MODEL_DELTA, {"step": step, "text": text})

        coalescer = _Coalescer(
            flush, self.events_config.delta_flush_interval, self.events_config.delta_flush_chars
        )
        response: ModelResponse | None = None
        self.phase = Phase.MODEL
        try:
            async for item in self.gate.stream_model(ctx, self.provider, request):
                if isinstance(item, TextDelta):
                    if item.text:
                        await coalescer.add(item.text)
                elif isinstance(item, Completed):
                    response = item.response
            await coalescer.drain()
        finally:
            self.phase = Phase.IDLE
        if response is None:
            from warden.errors import ModelError

            raise ModelError("the model stream ended without a final response")
        message = response.message
        async with self.log.transaction() as tx:
            await self.queue.fence(tx, self.lease)
            await self.journal.finish(tx, key, response.to_dict())
            items: list[tuple[EventType, dict[str, Any]]] = [
                (
                    EventType.MODEL_MESSAGE,
                    {
                        "step": step,
                        "content": message.content,
                        "tool_calls": [c.to_dict() for c in message.tool_calls],
                        "model": response.model,
                        "usage": response.usage.to_dict(),
                        "finish_reason": response.finish_reason,
                    },
                )
            ]
            items += [
                (
                    EventType.TOOL_REQUESTED,
                    {"step": step, "call_id": c.id, "name": c.name, "arguments": c.arguments},
                )
                for c in message.tool_calls
            ]
            await tx.emit_many(self.task_id, items)
        return response

    # -- tools -----------------------------------------------------------------------------

    async def _tool_turn(self, step: int, calls: tuple[ToolCall, ...]) -> list[Message]:
        self.phase = Phase.TOOLS
        try:
            async with asyncio.TaskGroup() as group:
                runs = [group.create_task(self._tool_call(step, i, call)) for i, call in enumerate(calls)]
        finally:
            self.phase = Phase.IDLE
        return [r.result() for r in runs]

    async def _tool_call(self, step: int, index: int, call: ToolCall) -> Message:
        key = f"tool:{step}:{index}"
        entry = self.journal.get(key)
        if entry is not None and entry.status is EntryStatus.FINISHED:
            return _tool_message(call, ToolResult(entry.data["content"], entry.data["is_error"]))

        tool, arguments, problem = self._check_call(call)
        if problem is not None:
            return await self._record(key, step, call, ToolResult(problem, is_error=True), started=False)
        assert tool is not None and arguments is not None

        if entry is not None and entry.status is EntryStatus.STARTED and not tool.idempotent:
            # Started in an attempt that died before recording the outcome: running it again
            # could repeat a side effect, so the model is told the outcome is unknown.
            result = ToolResult(
                f"the call to {tool.name} was interrupted before its result was recorded; its outcome is "
                "unknown and it was not run again, because the tool is not idempotent",
                is_error=True,
                data={"outcome": "unknown"},
            )
            return await self._record(key, step, call, result, started=False)

        assert self.state is not None
        ctx = self._ctx(self.state)
        decision = self.gate.decide_tool(ctx, tool, arguments)
        if decision.verdict is not Verdict.ALLOW:
            result = ToolResult(f"the call to {tool.name} was not allowed: {decision.reason}", is_error=True)
            return await self._record(key, step, call, result, started=False)

        async with self.log.transaction() as tx:
            await self.queue.fence(tx, self.lease)
            await self.journal.start(tx, key, {"name": tool.name, "arguments": arguments})
            await tx.emit(
                self.task_id,
                EventType.TOOL_STARTED,
                {"step": step, "call_id": call.id, "name": tool.name, "arguments": arguments},
            )

        async def emit_output(text: str) -> None:
            async with self.log.transaction() as tx:
                await self.queue.fence(tx, self.lease)
                await tx.emit(self.task_id, EventType.TOOL_OUTPUT, {"call_id": call.id, "text": text})

        coalescer = _Coalescer(
            emit_output, self.events_config.delta_flush_interval, self.events_config.delta_flush_chars
        )
        tool_ctx = ToolContext(
            task_id=self.task_id,
            tenant_id=self.lease.tenant_id,
            session_id=self.lease.session_id,
            call_id=call.id,
            emit_output=coalescer.add,
            home=self.home,
        )
        started = time.monotonic()
        try:
            result = await self.gate.call_tool(ctx, tool, arguments, tool_ctx)
        except Exception as exc:  # a tool's bug is an observation, not the end of the task
            result = ToolResult(f"{tool.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        await coalescer.drain()
        return await self._record(key, step, call, result, started=True, duration=time.monotonic() - started)

    def _check_call(self, call: ToolCall) -> tuple[Tool | None, dict[str, Any] | None, str | None]:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return None, None, f"unknown tool {call.name!r}; the tools you can call are: {known}"
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return (
                tool,
                None,
                f"the arguments of {call.name} are not valid JSON ({exc.msg} at {exc.pos}); resend them",
            )
        if not isinstance(arguments, dict):
            return tool, None, f"the arguments of {call.name} must be a JSON object"
        problem = _schema_problem(tool, arguments)
        if problem is not None:
            return tool, None, f"the arguments of {call.name} do not match its schema: {problem}"
        return tool, arguments, None

    async def _record(
        self, key: str, step: int, call: ToolCall, result: ToolResult, *, started: bool, duration: float = 0.0
    ) -> Message:
        content = result.content
        if len(content) > MAX_TOOL_CONTENT:
            content = content[:MAX_TOOL_CONTENT] + f"\n[truncated: {len(result.content)} characters in all]"
        data = _jsonable(result.data)
        async with self.log.transaction() as tx:
            await self.queue.fence(tx, self.lease)
            await self.journal.finish(
                tx, key, {"content": content, "is_error": result.is_error, "data": data}
            )
            await tx.emit(
                self.task_id,
                EventType.TOOL_FINISHED,
                {
                    "step": step,
                    "call_id": call.id,
                    "name": call.name,
                    "is_error": result.is_error,
                    "content": content,
                    "data": data,
                    "duration_ms": round(duration * 1000, 3),
                    "ran": started,
                },
            )
        return _tool_message(call, ToolResult(content, result.is_error))

    # -- the end ---------------------------------------------------------------------------

    async def _complete(self, state: LoopState, output: str) -> None:
        history = [m.to_dict() for m in state.messages if m.role != "system"]
        async with self.log.transaction() as tx:
            await self.queue.fence(tx, self.lease)
            await save_checkpoint(tx, self.task_id, LoopState(state.step + 1, state.messages, state.usage))
            await self.queue.finish(tx, self.lease, TaskStatus.COMPLETED, output=output, history=history)


def _tool_message(call: ToolCall, result: ToolResult) -> Message:
    return Message("tool", result.content, tool_call_id=call.id, name=call.name, is_error=result.is_error)


def _schema_problem(tool: Tool, arguments: dict[str, Any]) -> str | None:
    if isinstance(tool, FunctionTool):
        from pydantic import ValidationError

        try:
            tool.validate(arguments)
        except ValidationError as exc:
            return "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
            )
        return None
    try:
        jsonschema.validate(arguments, tool.parameters)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"{where}: {exc.message}"
    except jsonschema.SchemaError:
        return None
    return None


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))
