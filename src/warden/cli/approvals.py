"""`warden approvals`: the inbox of tool calls waiting for a human, and deciding them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from warden.cli._common import KeyOpt, UrlOpt, api_key, api_url, console, fail, run_async
from warden.client.http import WardenClient

app = typer.Typer(help="Tool calls waiting for a human: list, show, approve, deny.", no_args_is_help=True)

_STYLE = {"pending": "magenta", "approved": "green", "denied": "red", "expired": "dim"}


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _args(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@app.command("list")
def list_approvals(
    status: Annotated[
        str | None, typer.Option(help="pending (default), approved, denied, expired or all.")
    ] = "pending",
    task: Annotated[str | None, typer.Option("--task", help="Only this task's.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Approvals, newest first (pending ones by default)."""

    async def main() -> dict[str, Any]:
        async with WardenClient(api_url(url), api_key(key)) as client:
            return await client.approvals(
                status=None if status == "all" else status, task_id=task, limit=limit
            )

    page = run_async(main())
    table = Table("id", "status", "task", "tool", "arguments", "rule", "expires (UTC)", box=None)
    for a in page["items"]:
        table.add_row(
            a["id"],
            f"[{_STYLE.get(a['status'], '')}]{a['status']}[/]",
            a["task_id"],
            escape(a["tool"]),
            escape(_args(a["arguments"])[:60]),
            escape(a["rule"]),
            _when(a["expires_at"]),
        )
    console.print(table if page["items"] else "[dim]no approvals[/]")


@app.command("show")
def show(approval_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """One approval: the call, why it was asked, and its decision."""

    async def main() -> dict[str, Any]:
        async with WardenClient(api_url(url), api_key(key)) as client:
            return await client.approval(approval_id)

    a = run_async(main())
    lines = [
        f"[bold]status[/]     [{_STYLE.get(a['status'], '')}]{a['status']}[/]   default on expiry: {a['default_decision']}",
        f"[bold]task[/]       {a['task_id']} (step {a['step']}, agent {escape(a['agent'])})",
        f"[bold]tool[/]       {escape(a['tool'])}",
        f"[bold]arguments[/]  {escape(_args(a['arguments']))}",
        f"[bold]asked by[/]   rule {escape(a['rule'])}: {escape(a['reason'])}",
        f"[bold]created[/]    {_when(a['created_at'])}   expires {_when(a['expires_at'])}",
    ]
    if a["decided_by"]:
        lines.append(f"[bold]decided[/]    by {escape(a['decided_by'])} at {_when(a['decided_at'])}")
    if a["decision_reason"]:
        lines.append(f"[bold]reason[/]     {escape(a['decision_reason'])}")
    if a["edited_arguments"] is not None:
        lines.append(f"[bold]edited to[/]  {escape(_args(a['edited_arguments']))}")
    console.print(Panel("\n".join(lines), title=a["id"], highlight=False))


def _decide(
    approval_id: str,
    decision: str,
    reason: str | None,
    arguments: str | None,
    url: str | None,
    key: str | None,
) -> None:
    edited: dict[str, Any] | None = None
    if arguments is not None:
        try:
            edited = json.loads(arguments)
        except ValueError as exc:
            fail(f"--arguments is not valid JSON: {exc}")
        if not isinstance(edited, dict):
            fail("--arguments must be a JSON object")

    async def main() -> dict[str, Any]:
        async with WardenClient(api_url(url), api_key(key)) as client:
            return await client.decide(approval_id, decision, reason=reason, arguments=edited)

    a = run_async(main())
    console.print(
        f"{a['id']}: [{_STYLE.get(a['status'], '')}]{a['status']}[/] ({escape(a['tool'])} of task {a['task_id']})"
    )


@app.command()
def approve(
    approval_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (kept with the decision).")] = None,
    arguments: Annotated[str | None, typer.Option(help="Replacement arguments, a JSON object.")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Let the call run (with its arguments, or the ones given); the task resumes."""
    _decide(approval_id, "approve", reason, arguments, url, key)


@app.command()
def deny(
    approval_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (the model sees it).")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Refuse the call; the model is told, with the reason, and the task goes on."""
    _decide(approval_id, "deny", reason, None, url, key)
