"""Renders a task's live event stream in the terminal: streamed text as it arrives, tool calls
and their results, and a spinner while the agent is thinking or a tool is running."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.status import Status


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StreamRenderer:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None
        self._in_text = False
        self.final: dict[str, Any] | None = None

    def _wait(self, message: str) -> None:
        if self._status is None:
            self._status = self.console.status(message, spinner="dots")
            self._status.start()
        else:
            self._status.update(message)

    def _stop_wait(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _end_text(self) -> None:
        if self._in_text:
            self.console.print()
            self._in_text = False

    def handle(self, event: dict[str, Any]) -> None:
        etype, data = event["type"], event.get("data", {})
        if etype == "model.delta":
            self._stop_wait()
            if not self._in_text:
                self.console.print("[bold cyan]agent ›[/] ", end="")
                self._in_text = True
            self.console.print(escape(data.get("text", "")), end="", highlight=False, soft_wrap=True)
            return
        self._stop_wait()
        if etype == "model.message":
            if not self._in_text and data.get("content"):
                self.console.print(f"[bold cyan]agent ›[/] {escape(data['content'])}", highlight=False)
            self._end_text()
            if data.get("tool_calls"):
                self._wait("calling tools…")
            return
        self._end_text()
        if etype == "task.queued":
            self._wait("queued — waiting for a worker…")
        elif etype == "task.started":
            attempt = data.get("attempt", 1)
            note = f" (attempt {attempt})" if attempt > 1 else ""
            self.console.print(f"[dim]▶ started on {escape(str(data.get('worker', '?')))}{note}[/]")
            self._wait("thinking…")
        elif etype == "tool.requested":
            self.console.print(
                f"  [yellow]⚙ {escape(data.get('name', '?'))}[/]([dim]{escape(_short(data.get('arguments', '')))}[/])"
            )
            self._wait(f"running {data.get('name', 'tool')}…")
        elif etype == "tool.output":
            self.console.print(f"    [dim]│ {escape(data.get('text', '').rstrip())}[/]", highlight=False)
        elif etype == "tool.finished":
            mark = "[red]✗[/]" if data.get("is_error") else "[green]✓[/]"
            ms = data.get("duration_ms")
            timing = f" [dim]{ms:.0f} ms[/]" if isinstance(ms, int | float) and data.get("ran") else ""
            self.console.print(
                f"  {mark} {escape(data.get('name', '?'))} → {escape(_short(data.get('content', '')))}{timing}",
                highlight=False,
            )
            self._wait("thinking…")
        elif etype == "task.checkpoint":
            self._wait("thinking…")
        elif etype == "task.requeued":
            self.console.print(f"[magenta]↻ requeued: {escape(str(data.get('reason', '')))}[/]")
            self._wait("waiting for a worker…")
        elif etype in ("policy.decision", "approval.required", "approval.decided"):
            self.console.print(f"[magenta]§ {etype}: {escape(_short(data))}[/]")
        elif etype == "task.completed":
            self.final = event
            self.console.print("[bold green]✔ completed[/]")
        elif etype == "task.failed":
            self.final = event
            error = data.get("error") or {}
            self.console.print(
                f"[bold red]✘ failed[/] [red]{escape(error.get('code', ''))}: {escape(error.get('message', ''))}[/]"
            )
        elif etype == "task.cancelled":
            self.final = event
            self.console.print("[bold yellow]■ cancelled[/]")

    async def run(self, events: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
        try:
            async for event in events:
                self.handle(event)
        finally:
            self._stop_wait()
            self._end_text()
        return self.final
