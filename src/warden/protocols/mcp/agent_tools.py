"""Every agent of the catalog as an MCP tool ``agent_<name>``: a call submits a task, streams its
events as progress notifications, and returns the task's output (``isError`` unless it completed)."""

# No ``from __future__ import annotations``: the SDK reads each tool's parameter annotations, and
# the input limit in them is a closure variable that only eager evaluation can see.

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from warden.config import AgentSpec
from warden.errors import WardenError
from warden.events.types import Event, EventType
from warden.protocols.mcp._common import PrincipalOf, failure, internal_failure
from warden.service.keys import Principal
from warden.service.tasks import Submission
from warden.store.tasks import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from warden.runtime import Runtime

log = logging.getLogger("warden.mcp")

TOOL_PREFIX = "agent_"
QUEUE_ALLOWANCE = 600.0
"""How long past the agent's own wall-time limit a call waits (queueing, retries) before it
answers with the task id and leaves the task running."""
CANCEL_DEADLINE = 5.0
MESSAGE_CHARS = 500


def tool_name(agent: str) -> str:
    return f"{TOOL_PREFIX}{agent}"


def describe(event: Event) -> str | None:
    """A one-line progress message for an event; None for events not worth a notification."""
    data = event.data
    match event.type:
        case EventType.MODEL_DELTA | EventType.TOOL_OUTPUT:
            text = str(data.get("text", ""))
            return text[-MESSAGE_CHARS:] if text else None
        case EventType.TOOL_STARTED:
            return f"tool {data.get('name')} started"
        case EventType.TOOL_FINISHED:
            return f"tool {data.get('name')} {'failed' if data.get('is_error') else 'finished'}"
        case EventType.APPROVAL_REQUIRED:
            return f"waiting for approval of {data.get('name') or data.get('call_id')}"
        case EventType.MODEL_MESSAGE | EventType.TOOL_REQUESTED | EventType.POLICY_DECISION:
            return None
        case _:
            return event.type.value


def _output_text(output: Any) -> str:
    if output is None:
        return ""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)


def result_of(task: TaskRecord) -> CallToolResult:
    summary = {"task_id": task.id, "session_id": task.session_id, "status": task.status.value}
    if task.status is TaskStatus.COMPLETED:
        return CallToolResult(
            content=[TextContent(type="text", text=_output_text(task.output))],
            structured_content={**summary, "output": task.output},
        )
    if task.status.is_terminal:
        error = task.error or {}
        message = str(error.get("message") or f"the task was {task.status.value}")
        return CallToolResult(
            content=[TextContent(type="text", text=f"task {task.id} {task.status.value}: {message}")],
            structured_content={**summary, "error": error},
            is_error=True,
        )
    return CallToolResult(
        content=[
            TextContent(
                type="text",
                text=f"task {task.id} is still {task.status.value}; follow it at /v1/tasks/{task.id}",
            )
        ],
        structured_content=summary,
        is_error=True,
    )


class AgentTools:
    """Owns the agent tools of one MCP server. ``stopping`` is set while Warden shuts down: a call
    cut off then leaves its task to finish (workers resume it), while a call the client cancels
    cancels its task."""

    def __init__(self, runtime: "Runtime", principal_of: PrincipalOf) -> None:
        self.runtime = runtime
        self.principal_of = principal_of
        self.stopping = False

    def install(self, server: MCPServer) -> None:
        for spec in self.runtime.catalog.current.values():
            server.add_tool(
                self._tool(spec),
                name=tool_name(spec.name),
                title=spec.name,
                description=(spec.description or f"Run the Warden agent {spec.name!r}.")
                + " Returns the agent's answer; pass the returned session_id to continue the conversation.",
                annotations=ToolAnnotations(destructive_hint=False, open_world_hint=True),
            )

    def _tool(self, spec: AgentSpec) -> Callable[..., Any]:
        max_chars = self.runtime.config.server.max_input_chars
        deadline = spec.limits.timeout + QUEUE_ALLOWANCE

        async def run_agent(
            ctx: Context,
            input: Annotated[
                str, Field(min_length=1, max_length=max_chars, description="The task for the agent.")
            ],
            session_id: Annotated[
                str | None,
                Field(max_length=64, description="Continue this session (from an earlier result)."),
            ] = None,
        ) -> CallToolResult:
            try:
                caller = self.principal_of(ctx)
                caller.require("tasks:write")
                caller.require("tasks:read")
                task, _ = await self.runtime.tasks.submit(
                    caller,
                    Submission(agent=spec.name, input=input, session_id=session_id, metadata={"via": "mcp"}),
                )
            except WardenError as exc:
                return failure(exc)
            except Exception:
                return internal_failure(tool_name(spec.name))
            return await self._follow(ctx, caller, task, deadline)

        return run_agent

    async def _follow(
        self, ctx: Context, caller: Principal, task: TaskRecord, deadline: float
    ) -> CallToolResult:
        tasks = self.runtime.tasks
        try:
            async with asyncio.timeout(deadline):
                events = await tasks.events(caller, task.id)
                try:
                    async for event in events:
                        message = describe(event)
                        if message is not None:
                            await ctx.report_progress(event.seq, message=message)
                finally:
                    # Ends the bus subscription now, not when the collector finds the generator.
                    if isinstance(events, AsyncGenerator):
                        await events.aclose()
        except TimeoutError:
            log.info("MCP call for task %s passed its deadline; the task keeps running", task.id)
        except WardenError as exc:
            return failure(exc)
        except Exception:
            return internal_failure(tool_name(task.agent_name))
        except asyncio.CancelledError:
            # The client cancelled the call or went away: the task was this call's, so it stops too.
            if not self.stopping:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_DEADLINE):
                    try:
                        await tasks.cancel(caller, task.id)
                    except Exception:
                        log.warning(
                            "could not cancel task %s after its MCP call ended", task.id, exc_info=True
                        )
            raise
        try:
            return result_of(await tasks.get(caller, task.id))
        except WardenError as exc:
            return failure(exc)
        except Exception:
            return internal_failure(tool_name(task.agent_name))
