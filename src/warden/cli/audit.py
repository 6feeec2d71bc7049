"""`warden audit …`: read the tenant's audit log and verify its hash chain through the API."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from warden.cli._common import KeyOpt, UrlOpt, api_key, api_url, console, err_console, run_async
from warden.client.http import WardenClient

app = typer.Typer(help="Read the audit log and verify that nothing in it was altered.", no_args_is_help=True)

_OUTCOME_STYLE = {
    "allow": "green",
    "approved": "green",
    "ok": "green",
    "deny": "red",
    "denied": "red",
    "ask": "magenta",
}


async def _get(url: str | None, key: str | None, path: str, params: dict[str, Any] | None = None) -> Any:
    async with WardenClient(api_url(url), api_key(key)) as client:
        return await client._call("GET", path, params=params or {})


@app.command("list")
def audit_list(
    action: Annotated[str | None, typer.Option(help="Only this action (e.g. tool.decision).")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject (a task id, a tool…).")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    raw: Annotated[bool, typer.Option("--json", help="Print entries as JSON lines.")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """The newest audit entries of your tenant."""
    params = {"action": action, "subject": subject, "since": since, "until": until, "limit": limit}
    page = run_async(_get(url, key, "/v1/audit", {k: v for k, v in params.items() if v is not None}))
    items: list[dict[str, Any]] = page["items"]
    if raw:
        for item in items:
            typer.echo(json.dumps(item))
        return
    if not items:
        console.print("[dim]no audit entries[/]")
        return
    table = Table("seq", "time (UTC)", "actor", "action", "subject", "outcome", "rule", "reason", box=None)
    for e in items:
        outcome = e["outcome"] or ""
        style = _OUTCOME_STYLE.get(outcome, "")
        table.add_row(
            str(e["seq"]),
            datetime.fromisoformat(e["time"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            escape(e["actor"]),
            escape(e["action"]),
            escape(e["subject"] or ""),
            f"[{style}]{escape(outcome)}[/]" if style else escape(outcome),
            escape(e["rule"] or ""),
            escape((e["reason"] or "")[:60]),
        )
    console.print(table)


@app.command("export")
def audit_export(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: standard output).")
    ] = None,
    after_seq: Annotated[
        int, typer.Option(min=0, help="Only entries after this seq (incremental export).")
    ] = 0,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC if no zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601).")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Write your tenant's audit entries, oldest first, as JSON lines (with their hashes)."""

    async def export() -> int:
        count = 0
        async with WardenClient(api_url(url), api_key(key)) as client:
            lines = client.audit_export(after_seq=after_seq, action=action, since=since, until=until)
            if output is None:
                async for line in lines:
                    typer.echo(line)
                    count += 1
                return count
            partial = output.with_name(output.name + ".partial")
            try:
                with partial.open("w", encoding="utf-8") as f:
                    async for line in lines:
                        f.write(line + "\n")
                        count += 1
                # Renamed only when complete: a failed export never leaves a truncated file.
                partial.replace(output)
            finally:
                partial.unlink(missing_ok=True)
        return count

    try:
        count = run_async(export())
    except OSError as exc:
        err_console.print(
            f"[bold red]error:[/] cannot write {output}: {exc.strerror or exc}", highlight=False
        )
        raise typer.Exit(1) from None
    if output is not None:
        err_console.print(f"[green]exported[/] {count} audit entries to {escape(str(output))}")


@app.command("verify")
def audit_verify(url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Check the hash chain of your tenant's audit log; exits 1 if it was tampered with."""
    result = run_async(_get(url, key, "/v1/audit/verify"))
    if result["ok"]:
        console.print(f"[green]audit log intact[/]: {result['entries']} entries verified")
        return
    where = f" at entry {result['first_bad_seq']}" if result["first_bad_seq"] is not None else ""
    err_console.print(
        f"[bold red]audit log verification failed{where}:[/] {escape(result['problem'] or 'unknown problem')} "
        f"({result['entries']} entries sound before it)",
        highlight=False,
    )
    raise typer.Exit(1)
