"""The agent loop: model → tool calls → observations, until the model answers without calling
a tool. Every model response and tool result is journalled and every step checkpointed, so a
resumed attempt replays what is done and runs only what is not (invariant 3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import jsonschema
from sqlalchemy import update

from warden.agent.journal import EntryStatus, Journal
from warden.agent.state import LoopState, latest_checkpoint, save_checkpoint
from warden.config import AgentSpec, ApprovalsConfig, EventsConfig, ModelPrice
from warden.errors import ModelError
from warden.events.log import EventLog, Tx
from warden.events.types import EventType
from warden.governance.approvals import (
    ApprovalDecision,
    ApprovalRecord,
    approvals_for_task,
    insert_pending,
    pending_count,
)
from warden.governance.audit import AuditEntry, AuditLog
from warden.governance.budgets import BudgetLedger
from warden.governance.decision import Decision, Verdict
from warden.governance.gate import CallContext, Gate
from warden.governance.pii.errors import PiiError
from warden.governance.pii.guard import PiiGuard, SessionVault, mask_known
from warden.governance.pii.redactor import restore_json
from warden.governance.untrusted import (
    UNTRUSTED_NOTE,
    Finding,
    InjectionDetector,
    UntrustedContentConfig,
    mark_tool_output,
    model_description,
)
from warden.models.base import (
    Completed,
    Message,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ToolCall,
    ToolSpec,
    valid_text,
    wire_tool_names,
)
from warden.queue.lease import Lease
from warden.queue.sql import SqlTaskQueue
from warden.store.schema import tasks
from warden.store.tasks import TaskStatus
from warden.tools.base import FunctionTool, Tool, ToolContext, ToolResult

MAX_TOOL_CONTENT = 100_000
"""Characters of one tool result the model sees; the rest is cut with a note."""

RULE_UNTRUSTED = "warden.untrusted-content"
"""The rule named when a flagged tool result makes the next side-effecting call ask (or deny)."""


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
    """Buffers streamed text and writes it as one event per interval (or per ``max_chars``), so
    storage holds a few events per second of streaming rather than one per token. A timer
    flushes too, so text is not held back while the model pauses."""

    def __init__(self, flush: Callable[[str], Awaitable[None]], interval: float, max_chars: int) -> None:
        self._flush = flush
        self._interval = interval
        self._max_chars = max_chars
        self._parts: list[str] = []
        self._size = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    async def add(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._max_chars or self._interval <= 0:
            await self.drain()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._interval)
        self._timer = None
        await self.drain()

    def _cancel_timer(self) -> None:
        if self._timer is not None and asyncio.current_task() is not self._timer:
            self._timer.cancel()
        self._timer = None

    async def drain(self) -> None:
        """Write what is buffered now."""
        async with self._lock:
            if self._timer is not None and asyncio.current_task() is not self._timer:
                self._cancel_timer()
            if self._parts:
                text = "".join(self._parts)
                self._parts.clear()
                self._size = 0
                await self._flush(text)

    def take(self) -> str:
        """Hand over what is buffered instead of writing it (the caller writes it itself)."""
        self._cancel_timer()
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        return text

    async def close(self) -> None:
        """Stop the timer and wait for a flush in progress, so later events keep their order."""
        self._cancel_timer()
        async with self._lock:
            pass


@dataclass(frozen=True, slots=True)
class _Turn:
    key: str
    response: ModelResponse
    tail: str
    """Streamed text not yet written as a `model.delta` event."""
    journalled: bool = False
    """Replayed from the journal: already recorded, nothing to write."""


class _Kind(StrEnum):
    DONE = "done"
    """Finished in an earlier attempt: reuse the journalled result."""
    REFUSE = "refuse"
    """Not run: malformed, unknown, not allowed, or of unknown outcome."""
    RUN = "run"
    RERUN = "rerun"
    """Started before a crash and idempotent: run again."""
    WAIT = "wait"
    """A policy asked a human: the task parks until the approval is decided."""


@dataclass
class _Plan:
    """What happens to one tool call of a step."""

    key: str
    step: int
    call: ToolCall
    kind: _Kind = _Kind.RUN
    tool: Tool | None = None
    arguments: dict[str, Any] | None = None
    result: ToolResult | None = None
    deferred: tuple[ToolResult, bool, float] | None = None
    """(result, ran, seconds) of a finished call not yet written."""
    decision: Decision | None = None
    """The gate's decision, when this attempt asked it."""
    flagged: Finding | None = None
    """Set when the injection detector flagged this call's result."""
    real_arguments: dict[str, Any] | None = None
    """``arguments`` with the PII vault's placeholders restored: what the policy and the tool
    see. ``arguments`` (placeholders) is what events, the journal and approvals keep."""

    def refuse(self, result: ToolResult) -> _Plan:
        self.kind = _Kind.REFUSE
        self.deferred = (result, False, 0.0)
        return self


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
        sandboxes: Any = None,
        approvals: ApprovalsConfig | None = None,
        audit: AuditLog | None = None,
        price: ModelPrice | None = None,
        pii: PiiGuard | None = None,
        budgets: BudgetLedger | None = None,
        untrusted: UntrustedContentConfig | None = None,
        injection: InjectionDetector | None = None,
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
        self.sandboxes = sandboxes
        self.journal = Journal(log.db, lease.task_id)
        self.approvals_config = approvals or ApprovalsConfig()
        self.audit = audit
        self.price = price
        self.pii = pii if pii is not None and pii.redactor is not None else None
        self.budgets = budgets if budgets else None
        self.untrusted = untrusted or UntrustedContentConfig()
        self.injection = injection
        self._vault: SessionVault | None = None
        self._redacted_input: str | None = None
        self._approvals: dict[str, ApprovalRecord] = {}
        self.phase = Phase.IDLE
        self.state: LoopState | None = None
        # Models see provider-safe names (an MCP tool `time.now` is `time__now` on the wire);
        # events, the gate and the journal's plans use the real ones.
        wire = wire_tool_names(tools)
        self._by_wire_name = {wire[name]: tool for name, tool in tools.items()}
        mark = self.untrusted.mark_tool_output
        self._tool_specs = tuple(
            ToolSpec(wire[t.name], model_description(t, mark=mark), t.parameters) for t in tools.values()
        )

    # -- entry -----------------------------------------------------------------------------

    async def run(self, task_input: TaskInput) -> None:
        """Run to completion (or until cancelled / a limit / a failure raises)."""
        # What an earlier attempt left, in one read: journal, approvals, vault, checkpoint. A
        # fresh task has none of the first three (only its session's vault, if any).
        state: LoopState | None = None
        if not self.lease.fresh or self.pii is not None:
            async with self.log.db.read() as conn:
                if not self.lease.fresh:
                    await self.journal.load(conn)
                    self._approvals = await approvals_for_task(conn, self.task_id)
                    state = await latest_checkpoint(conn, self.task_id)
                if self.pii is not None:
                    self._vault = await self.pii.open_vault(conn, self.lease.session_id or self.task_id)
        if state is None:
            state = LoopState(step=0, messages=await self._first_messages(task_input))
        self.state = state
        while True:
            turn = await self._model_turn(state)
            response = turn.response
            state.messages.append(response.message)
            state.add_usage(response.model or self.provider.name, response.usage)
            calls = response.message.tool_calls
            if not calls:
                await self._complete(state, turn)
                return
            plans = [self._plan(state.step, i, call) for i, call in enumerate(calls)]
            self.gate.check_tool_calls(
                self._ctx(state), sum(p.kind in (_Kind.RUN, _Kind.RERUN, _Kind.WAIT) for p in plans)
            )
            await self._record_turn(state.step, turn, plans)
            results = await self._tool_turn(state.step, plans)
            if any(p.kind is _Kind.WAIT for p in plans):
                # The calls that were allowed have run; the rest wait for a human. The task
                # resumes from the last checkpoint on any worker once they are decided, and
                # the journal hands it back this step's response and finished calls.
                await self._park(plans)
                return
            state.messages.extend(results)
            state.step += 1
            deferred = [p for p in plans if p.deferred is not None]
            # Invariant 3: the step's last tool result and the checkpoint commit together.
            async with self.log.transaction() as tx:
                items = [await self._finish_items(tx, p) for p in deferred]
                await self._seal(tx)
                await save_checkpoint(tx, self.task_id, state, update_usage=False)
                items.append((EventType.TASK_CHECKPOINT, {"step": state.step}))
                await tx.emit_later(
                    self.task_id, items, guard=self.queue.guard(self.lease, usage=state.usage_dict())
                )

    async def _first_messages(self, task_input: TaskInput) -> list[Message]:
        """The conversation the model starts from. With the PII vault on, the input and earlier
        turns are redacted here, once; the checkpoint keeps only the redacted text."""
        instructions = self.spec.instructions
        if self.untrusted.mark_tool_output and self.tools:
            instructions = f"{instructions}\n\n{UNTRUSTED_NOTE}" if instructions else UNTRUSTED_NOTE
        conversation = [*task_input.history, Message("user", task_input.text)]
        if self.pii is not None:
            texts = await self._redact_many([m.content for m in conversation])
            conversation = [replace(m, content=text) for m, text in zip(conversation, texts, strict=True)]
            # The task's stored input is replaced by its redacted form with the first write.
            self._redacted_input = texts[-1]
        return ([Message("system", instructions)] if instructions else []) + conversation

    async def _redact_many(self, texts: list[str]) -> list[str]:
        assert self.pii is not None and self.pii.redactor is not None and self._vault is not None
        return await self.pii.redactor.redact_many(texts, self._vault.vault)

    async def _seal(self, tx: Tx) -> None:
        """Seal the vault with the content whose placeholders it just issued (same transaction)."""
        if self.pii is not None and self._vault is not None:
            await self.pii.seal(tx, self._vault, tenant_id=self.lease.tenant_id)
            if self._redacted_input is not None:
                await tx.write(
                    update(tasks).where(tasks.c.id == self.task_id).values(input=self._redacted_input)
                )
                self._redacted_input = None

    def _mask(self, text: str) -> str:
        """Warden's own text about a call (a reason, a schema error) with real values hidden."""
        return mask_known(text, self._vault.vault) if self._vault is not None else text

    def _ctx(self, state: LoopState) -> CallContext:
        usage = state.total_usage
        return CallContext(
            task_id=self.task_id,
            tenant_id=self.lease.tenant_id,
            agent=self.spec.name,
            step=state.step,
            usage=usage,
            limits=self.spec.limits,
            tool_calls=sum(1 for m in state.messages if m.role == "tool"),
            cost=self.price.cost(usage.input_tokens, usage.output_tokens) if self.price else None,
        )

    # -- model -----------------------------------------------------------------------------

    async def _model_turn(self, state: LoopState) -> _Turn:
        """The step's model response: from the journal on resume, else streamed from the model.
        Text streamed after the last flush is returned as ``tail``, to be written with the
        response in one transaction."""
        key = f"model:{state.step}"
        entry = self.journal.get(key)
        if entry is not None and entry.status is EntryStatus.FINISHED:
            return _Turn(key, ModelResponse.from_dict(entry.data), tail="", journalled=True)
        ctx = self._ctx(state)
        if self.budgets is not None:
            live = (self.task_id, ctx.usage.total_tokens, ctx.cost or 0.0)
            await self.budgets.check(self.lease.tenant_id, self.spec.name, live=live)
        request = ModelRequest(
            messages=tuple(state.messages),
            tools=self._tool_specs,
            max_tokens=self.spec.limits.max_output_tokens,
            metadata={"task_id": self.task_id, "step": str(state.step)},
        )
        step = state.step

        async def flush(text: str) -> None:
            async with self.log.transaction() as tx:
                await tx.emit_later(
                    self.task_id,
                    [(EventType.MODEL_DELTA, {"step": step, "text": text})],
                    guard=self.queue.guard(self.lease),
                )

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
        finally:
            self.phase = Phase.IDLE
            await coalescer.close()
        if response is None:
            raise ModelError("the model stream ended without a final response")
        return _Turn(key, response.as_text(), tail=coalescer.take())

    def _model_items(self, step: int, turn: _Turn) -> list[tuple[EventType, dict[str, Any]]]:
        if turn.journalled:
            return []
        response, message = turn.response, turn.response.message
        items: list[tuple[EventType, dict[str, Any]]] = []
        if turn.tail:
            items.append((EventType.MODEL_DELTA, {"step": step, "text": turn.tail}))
        items.append(
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
        )
        items += [
            (
                EventType.TOOL_REQUESTED,
                {"step": step, "call_id": c.id, "name": self._tool_name(c), "arguments": c.arguments},
            )
            for c in message.tool_calls
        ]
        return items

    async def _record_turn(self, step: int, turn: _Turn, plans: list[_Plan]) -> None:
        """One transaction: the model response and its events, and the start (or the refusal)
        of every tool call it asked for."""
        items = self._model_items(step, turn)
        async with self.log.transaction() as tx:
            if not turn.journalled:
                await self.journal.finish(tx, turn.key, turn.response.to_dict())
            for plan in plans:
                if plan.decision is not None:
                    items.append(self._decision_item(plan))
                if plan.kind is _Kind.RUN:
                    items.append(await self._start_items(tx, plan))
                elif plan.kind is _Kind.REFUSE:
                    items.append(await self._finish_items(tx, plan))
                elif plan.kind is _Kind.WAIT:
                    items.append(await self._approval_item(tx, plan))
            await tx.emit_later(self.task_id, items, guard=self.queue.guard(self.lease))
            await self._seal(tx)
            # Last, so the tenant's audit chain stays locked only until this commit.
            if self.audit is not None:
                entries = [self._model_call_entry(step, turn), *(self._decision_entry(p) for p in plans)]
                await self.audit.append_later(tx.conn, [e for e in entries if e is not None])

    def _model_call_entry(self, step: int, turn: _Turn) -> AuditEntry | None:
        """Every model call's metadata (never its content) is in the audit log, with the turn."""
        if turn.journalled:
            return None
        response = turn.response
        return AuditEntry(
            tenant_id=self.lease.tenant_id,
            actor=f"agent:{self.spec.name}",
            action="model.call",
            subject=self.spec.model,
            outcome=response.finish_reason or "stop",
            data={
                "task_id": self.task_id,
                "step": step,
                "model": response.model,
                "usage": response.usage.to_dict(),
                "tool_calls": [self._tool_name(c) for c in response.message.tool_calls],
                "pii_redacted": self.pii is not None,
            },
        )

    def _decision_entry(self, plan: _Plan) -> AuditEntry | None:
        """Every tool call's decision is in the audit log, committed with the turn that made it,
        with the arguments as the model gave them (placeholders, never restored PII values)."""
        if plan.decision is None:
            return None
        decision = plan.decision
        return AuditEntry(
            tenant_id=self.lease.tenant_id,
            actor=f"agent:{self.spec.name}",
            action="tool.decision",
            subject=self._tool_name(plan.call),
            outcome=decision.verdict.value,
            rule=decision.rule,
            reason=self._mask(decision.reason)[:2000],
            data={
                "task_id": self.task_id,
                "step": plan.step,
                "call_id": plan.call.id,
                "arguments": _audit_arguments(plan.arguments),
            },
        )

    def _decision_item(self, plan: _Plan) -> tuple[EventType, dict[str, Any]]:
        decision = plan.decision
        assert decision is not None
        return (
            EventType.POLICY_DECISION,
            {
                "step": plan.step,
                "call_id": plan.call.id,
                "name": self._tool_name(plan.call),
                "decision": decision.verdict.value,
                "rule": decision.rule,
                "reason": self._mask(decision.reason),
            },
        )

    async def _approval_item(self, tx: Tx, plan: _Plan) -> tuple[EventType, dict[str, Any]]:
        """The approval a waiting call needs (recorded once: a resumed attempt finds it)."""
        assert plan.tool is not None and plan.arguments is not None and plan.decision is not None
        existing = self._approvals.get(plan.key)
        config = self.approvals_config
        approval_id = (
            existing.id
            if existing is not None
            else await insert_pending(
                tx.conn,
                tenant_id=self.lease.tenant_id,
                task_id=self.task_id,
                session_id=self.lease.session_id,
                agent_name=self.spec.name,
                step=plan.step,
                call_key=plan.key,
                call_id=plan.call.id,
                tool=plan.tool.name,
                arguments=plan.arguments,
                rule=plan.decision.rule,
                reason=self._mask(plan.decision.reason),
                default_decision=ApprovalDecision(config.on_expiry),
                now=self.log.db.now(),
                timeout=config.timeout,
            )
        )
        return (
            EventType.APPROVAL_REQUIRED,
            {
                "step": plan.step,
                "approval_id": approval_id,
                "call_id": plan.call.id,
                "name": plan.tool.name,
                "arguments": plan.arguments,
                "rule": plan.decision.rule,
                "reason": self._mask(plan.decision.reason),
            },
        )

    # -- tools -----------------------------------------------------------------------------

    def _plan(self, step: int, index: int, call: ToolCall) -> _Plan:
        key = f"tool:{step}:{index}"
        plan = _Plan(key=key, step=step, call=call)
        entry = self.journal.get(key)
        if entry is not None and entry.status is EntryStatus.FINISHED:
            plan.kind = _Kind.DONE
            plan.result = ToolResult(entry.data["content"], entry.data["is_error"])
            return plan
        tool, arguments, real, problem = self._check_call(call)
        if problem is not None:
            return plan.refuse(ToolResult(self._mask(problem), is_error=True))
        assert tool is not None and arguments is not None and real is not None
        plan.tool, plan.arguments, plan.real_arguments = tool, arguments, real
        if entry is not None and entry.status is EntryStatus.STARTED:
            if not tool.idempotent:
                # Started in an attempt that died before recording the outcome: running it
                # again could repeat a side effect, so the model is told the outcome is unknown.
                return plan.refuse(
                    ToolResult(
                        f"the call to {tool.name} was interrupted before its result was recorded; its outcome "
                        "is unknown and it was not run again, because the tool is not idempotent",
                        is_error=True,
                        data={"outcome": "unknown"},
                    )
                )
            plan.kind = _Kind.RERUN
            return plan
        assert self.state is not None
        decision = self.gate.decide_tool(self._ctx(self.state), tool, real)
        if decision.verdict is Verdict.ALLOW and tool.side_effects:
            finding = self._injection_finding(step)
            if finding is not None:
                decision = Decision(
                    Verdict(self.untrusted.on_detection),
                    RULE_UNTRUSTED,
                    f"a tool result earlier in this task looks like a prompt-injection attempt "
                    f"({finding.detector}: {finding.reason}); {tool.name} has side effects",
                )
        plan.decision = decision
        if decision.verdict is Verdict.DENY:
            return plan.refuse(
                ToolResult(f"the call to {tool.name} was not allowed: {decision.reason}", is_error=True)
            )
        if decision.verdict is Verdict.ASK:
            return self._plan_approval(plan, tool)
        plan.kind = _Kind.RUN
        return plan

    def _plan_approval(self, plan: _Plan, tool: Tool) -> _Plan:
        approval = self._approvals.get(plan.key)
        if approval is None or not approval.decided:
            plan.kind = _Kind.WAIT
            return plan
        who = approval.decided_by or "an approver"
        if not approval.allows:
            why = f": {approval.decision_reason}" if approval.decision_reason else ""
            verb = (
                "was not approved in time"
                if approval.decided_by == "system:expired"
                else f"was denied by {who}"
            )
            return plan.refuse(ToolResult(f"the call to {tool.name} {verb}{why}", is_error=True))
        if approval.edited_arguments is not None:
            edited = dict(approval.edited_arguments)
            real = self._restored(edited)
            problem = _schema_problem(tool, real)
            if problem is not None:
                return plan.refuse(
                    ToolResult(
                        self._mask(f"the arguments {who} approved for {tool.name} are not valid: {problem}"),
                        True,
                    )
                )
            plan.arguments, plan.real_arguments = edited, real
        plan.kind = _Kind.RUN
        return plan

    async def _park(self, plans: list[_Plan]) -> None:
        """Write the results of the calls that ran and hand the task back, awaiting approval."""
        async with self.log.transaction() as tx:
            items = [await self._finish_items(tx, p) for p in plans if p.deferred is not None]
            await self._seal(tx)
            await self.queue.park(tx, self.lease, pending=pending_count(self.task_id))
            if items:
                await tx.emit_later(self.task_id, items)

    async def _start_items(self, tx: Tx, plan: _Plan) -> tuple[EventType, dict[str, Any]]:
        assert plan.tool is not None
        await self.journal.start(tx, plan.key, {"name": plan.tool.name, "arguments": plan.arguments})
        return (
            EventType.TOOL_STARTED,
            {"step": plan.step, "call_id": plan.call.id, "name": plan.tool.name, "arguments": plan.arguments},
        )

    async def _finish_items(self, tx: Tx, plan: _Plan) -> tuple[EventType, dict[str, Any]]:
        result, ran, duration = plan.deferred or (plan.result or ToolResult("", True), False, 0.0)
        content = result.content
        if len(content) > MAX_TOOL_CONTENT:
            content = content[:MAX_TOOL_CONTENT] + f"\n[truncated: {len(result.content)} characters in all]"
        data = _jsonable(result.data)
        entry: dict[str, Any] = {"content": content, "is_error": result.is_error, "data": data}
        if plan.flagged is not None:
            entry["flagged"] = {"detector": plan.flagged.detector, "reason": plan.flagged.reason}
        await self.journal.finish(tx, plan.key, entry)
        plan.result = ToolResult(content, result.is_error)
        plan.deferred = None
        event = {
            "step": plan.step,
            "call_id": plan.call.id,
            "name": self._tool_name(plan.call),
            "is_error": result.is_error,
            "content": content,
            "data": data,
            "duration_ms": round(duration * 1000, 3),
            "ran": ran,
        }
        if "flagged" in entry:
            event["flagged"] = entry["flagged"]
        return (EventType.TOOL_FINISHED, event)

    async def _tool_turn(self, step: int, plans: list[_Plan]) -> list[Message]:
        runnable = [p for p in plans if p.kind in (_Kind.RUN, _Kind.RERUN)]
        # A lone call's result is written with the checkpoint; with several, each is written as
        # soon as it finishes, so a slow sibling cannot put a finished result at risk.
        defer = len(runnable) == 1
        self.phase = Phase.TOOLS
        try:
            async with asyncio.TaskGroup() as group:
                for plan in runnable:
                    group.create_task(self._execute(plan, defer=defer))
        finally:
            self.phase = Phase.IDLE
        messages = []
        for plan in plans:
            if plan.kind is _Kind.WAIT:
                continue  # the task parks after this turn; the resumed attempt has the decision
            result = plan.result
            if plan.deferred is not None:
                content = plan.deferred[0].content
                if len(content) > MAX_TOOL_CONTENT:
                    content = content[:MAX_TOOL_CONTENT] + f"\n[truncated: {len(content)} characters in all]"
                result = ToolResult(content, plan.deferred[0].is_error)
            assert result is not None
            messages.append(self._tool_message(plan.call, result))
        return messages

    async def _execute(self, plan: _Plan, *, defer: bool) -> None:
        tool, arguments, call = plan.tool, plan.arguments, plan.call
        assert tool is not None and arguments is not None and self.state is not None
        if plan.kind is _Kind.RERUN:
            async with self.log.transaction() as tx:
                item = await self._start_items(tx, plan)
                await tx.emit_later(self.task_id, [item], guard=self.queue.guard(self.lease))

        async def emit_output(text: str) -> None:
            if self.pii is not None:
                (text,) = await self._redact_many([text])
            async with self.log.transaction() as tx:
                await tx.emit_later(
                    self.task_id,
                    [(EventType.TOOL_OUTPUT, {"call_id": call.id, "text": text})],
                    guard=self.queue.guard(self.lease),
                )
                await self._seal(tx)

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
            sandboxes=self.sandboxes,
        )
        started = time.monotonic()
        real = plan.real_arguments if plan.real_arguments is not None else arguments
        try:
            result = await self.gate.call_tool(self._ctx(self.state), tool, real, tool_ctx)
        except Exception as exc:  # a tool's bug is an observation, not the end of the task
            result = ToolResult(f"{tool.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        finally:
            await coalescer.close()
        await coalescer.drain()
        duration = time.monotonic() - started
        result, plan.flagged = await self._inbound(tool, result)
        plan.deferred = (result, True, duration)
        if not defer:
            async with self.log.transaction() as tx:
                item = await self._finish_items(tx, plan)
                await tx.emit_later(self.task_id, [item], guard=self.queue.guard(self.lease))
                await self._seal(tx)

    async def _inbound(self, tool: Tool, result: ToolResult) -> tuple[ToolResult, Finding | None]:
        """A tool's result as Warden keeps it and the model sees it: PII redacted (it may hold
        the real values the call was given, or new ones), and flagged if it reads like an
        attempt to steer the agent. Redaction that fails withholds the result (fail closed)."""
        content = valid_text(result.content)
        if content is not result.content:
            result = ToolResult(content, result.is_error, result.data)
        if self.pii is not None:
            assert self.pii.redactor is not None and self._vault is not None
            try:
                content = await self.pii.redactor.redact(result.content, self._vault.vault)
                data = (
                    await self.pii.redactor.redact_json(_jsonable(result.data), self._vault.vault)
                    if result.data is not None
                    else None
                )
            except PiiError as exc:
                withheld = (
                    f"the result of {tool.name} was withheld: it could not be checked for personal "
                    f"data ({exc.code})"
                )
                return ToolResult(withheld, is_error=True), None
            result = ToolResult(content, result.is_error, data)
        if self.injection is not None and not result.is_error:
            try:
                finding = self.injection.scan(result.content)
            except Exception as exc:  # a broken detector must not let a result pass unchecked
                finding = Finding("detector.error", f"{type(exc).__name__}: {exc}")
            if finding is not None:
                return result, finding
        return result, None

    def _tool_name(self, call: ToolCall) -> str:
        tool = self._by_wire_name.get(call.name)
        return tool.name if tool is not None else call.name

    def _check_call(
        self, call: ToolCall
    ) -> tuple[Tool | None, dict[str, Any] | None, dict[str, Any] | None, str | None]:
        """(tool, arguments as the model wrote them, the same with real values, problem)."""
        tool = self._by_wire_name.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self._by_wire_name)) or "none"
            return None, None, None, f"unknown tool {call.name!r}; the tools you can call are: {known}"
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return (
                tool,
                None,
                None,
                f"the arguments of {call.name} are not valid JSON ({exc.msg} at {exc.pos}); resend them",
            )
        if not isinstance(arguments, dict):
            return tool, None, None, f"the arguments of {call.name} must be a JSON object"
        real = self._restored(arguments)
        problem = _schema_problem(tool, real)
        if problem is not None:
            return tool, None, None, f"the arguments of {call.name} do not match its schema: {problem}"
        return tool, arguments, real, None

    def _restored(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments with the session's real values back in place of placeholders."""
        if self._vault is None:
            return arguments
        restored: dict[str, Any] = restore_json(arguments, self._vault.vault)
        return restored

    def _injection_finding(self, step: int) -> Finding | None:
        """A flagged tool result of this task that no human has acted on since: a result from a
        step before the last approved call no longer counts."""
        if self.injection is None:
            return None
        approved = [a.step for a in self._approvals.values() if a.decided and a.allows]
        cleared_before = max(approved, default=-1)
        for key, entry in self.journal.entries.items():
            flagged = entry.data.get("flagged") if isinstance(entry.data, dict) else None
            if not key.startswith("tool:") or not isinstance(flagged, dict):
                continue
            flagged_step = int(key.split(":")[1])
            if flagged_step < step and flagged_step >= cleared_before:
                return Finding(str(flagged.get("detector", "")), str(flagged.get("reason", "")))
        return None

    # -- the end ---------------------------------------------------------------------------

    async def _complete(self, state: LoopState, turn: _Turn) -> None:
        """The model answered without calling a tool: record the answer and end the task in
        one transaction."""
        history = [m.to_dict() for m in state.messages if m.role != "system"]
        async with self.log.transaction() as tx:
            if not turn.journalled:
                await self.journal.finish(tx, turn.key, turn.response.to_dict())
            items = self._model_items(state.step, turn)
            if items:
                await tx.emit_later(self.task_id, items, guard=self.queue.guard(self.lease))
            await self._seal(tx)
            await self.queue.finish(
                tx,
                self.lease,
                TaskStatus.COMPLETED,
                output=turn.response.message.content,
                history=history,
                usage=state.usage_dict(),
                fenced=bool(items),
            )
            entry = self._model_call_entry(state.step, turn)
            if self.audit is not None and entry is not None:
                await self.audit.append_later(tx.conn, [entry])

    def _tool_message(self, call: ToolCall, result: ToolResult) -> Message:
        content = result.content
        if self.untrusted.mark_tool_output:
            content = mark_tool_output(self._tool_name(call), content)
        return Message("tool", content, tool_call_id=call.id, name=call.name, is_error=result.is_error)


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


MAX_AUDIT_ARGUMENTS = 8_000
"""Characters of a call's arguments kept in its audit entry; longer ones keep a digest."""


def _audit_arguments(arguments: dict[str, Any] | None) -> Any:
    text = json.dumps(_jsonable(arguments), ensure_ascii=False, sort_keys=True)
    if len(text) <= MAX_AUDIT_ARGUMENTS:
        return json.loads(text)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"truncated": True, "characters": len(text), "sha256": digest}
