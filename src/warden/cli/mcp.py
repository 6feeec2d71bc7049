"""`warden mcp …`: list MCP servers and their tools with their pin status, inspect one tool's
definition, hash and flags, approve tools (recording who and when), and serve Warden over MCP."""

from __future__ import annotations

import getpass
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from warden.cli._common import config_from, console, fail, run_async
from warden.config import WardenConfig
from warden.errors import WardenError
from warden.store.database import Database
from warden.store.migrate import upgrade
from warden.tools.mcp import MCPManager, PinStore, ToolRecord, ToolStatus, disabled_reason

app = typer.Typer(help="MCP: the servers Warden calls (list, inspect, approve) and Warden as a server.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="warden.yaml to read.")]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Show what the database knows; do not contact the servers.")
]

_STYLE = {
    ToolStatus.APPROVED: "green",
    ToolStatus.PENDING: "yellow",
    ToolStatus.FLAGGED: "red",
    ToolStatus.CHANGED: "bold red",
}


@asynccontextmanager
async def _manager(config: WardenConfig) -> AsyncIterator[MCPManager]:
    if not config.mcp_servers:
        fail("warden.yaml declares no mcp_servers")
    db = Database(config.resolved_database_url)
    try:
        await upgrade(db)
        manager = MCPManager(config.mcp_servers, pins=PinStore(db), log_dir=config.home / "mcp")
        try:
            await manager.load()
            yield manager
        finally:
            await manager.aclose()
    finally:
        await db.dispose()


async def _refresh(manager: MCPManager, server: str) -> str | None:
    """List the server's tools now (recording them); the problem as text when it cannot."""
    try:
        await manager.discover(server)
    except WardenError as exc:
        return exc.message
    return None


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


@app.command("list")
def list_servers(config: ConfigOpt = None, offline: OfflineOpt = False) -> None:
    """List the configured MCP servers and their tools, with each tool's status."""
    cfg = config_from(config)

    async def go() -> None:
        async with _manager(cfg) as manager:
            table = Table("tool", "status", "flags", "sha256", "approved by")
            for server in manager.server_names():
                problem = None if offline else await _refresh(manager, server)
                server_cfg = manager.config(server)
                where = server_cfg.url or " ".join([server_cfg.command or "", *server_cfg.args])
                era = manager.eras.get(server)
                table.add_row(
                    f"[bold]{escape(server)}[/]",
                    f"[red]{escape(problem)}[/]"
                    if problem
                    else f"{server_cfg.transport}, era {era.era if era else '?'}",
                    "",
                    "",
                    escape(where[:60]),
                )
                for record in manager.records(server):
                    table.add_row(
                        f"  {escape(record.qualified_name)}",
                        f"[{_STYLE[record.status]}]{record.status.value}[/]",
                        escape(", ".join(sorted({f.rule.value for f in record.flags}))),
                        record.sha256[:12],
                        escape(record.approved_by or "-"),
                    )
            console.print(table)

    run_async(go())


def _show(record: ToolRecord) -> None:
    console.print(
        f"[bold]{escape(record.qualified_name)}[/]  [{_STYLE[record.status]}]{record.status.value}[/]"
    )
    console.print(f"sha256:   {record.sha256}")
    console.print(f"pinned:   {record.approved_sha256 or '-'}")
    console.print(f"approved: {escape(record.approved_by or '-')} at {_when(record.approved_at)}")
    console.print(f"seen:     first {_when(record.first_seen_at)}, last {_when(record.last_seen_at)}")
    if not record.enabled:
        console.print(f"[yellow]{escape(disabled_reason(record))}[/]")
    for flag in record.flags:
        console.print(f"[red]flag[/] {flag.rule.value} in {escape(flag.where)}: {escape(flag.excerpt)}")
    console.print("definition:")
    console.print_json(json.dumps(record.definition, ensure_ascii=True))
    if record.status is ToolStatus.CHANGED and record.approved_definition is not None:
        console.print("approved definition:")
        console.print_json(json.dumps(record.approved_definition, ensure_ascii=True))


@app.command()
def inspect(
    server: Annotated[str, typer.Argument(help="MCP server name.")],
    tool: Annotated[str | None, typer.Argument(help="One tool (default: all of the server's).")] = None,
    config: ConfigOpt = None,
    offline: OfflineOpt = False,
) -> None:
    """Show tool definitions with their hash, pin, approval and poisoning flags."""
    cfg = config_from(config)

    async def go() -> None:
        async with _manager(cfg) as manager:
            manager.config(server)
            problem = None if offline else await _refresh(manager, server)
            if problem:
                console.print(f"[red]cannot list the server's tools now:[/] {escape(problem)}")
            records = [r for r in manager.records(server) if tool is None or r.name == tool]
            if not records:
                fail(
                    f"no tool {tool!r} known on MCP server {server!r}"
                    if tool
                    else f"no tools known on {server!r}"
                )
            for record in records:
                _show(record)

    run_async(go())


@app.command()
def approve(
    server: Annotated[str, typer.Argument(help="MCP server name.")],
    tools: Annotated[
        list[str] | None, typer.Argument(help="Tools to approve (default: all unflagged).")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: the login name).")] = None,
    include_flagged: Annotated[
        bool, typer.Option("--include-flagged", help="Also approve tools the poisoning checks flagged.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Pin the tools' current definitions: they run until their definition changes."""
    cfg = config_from(config)
    who = by or getpass.getuser()

    async def go() -> None:
        async with _manager(cfg) as manager:
            problem = await _refresh(manager, server)
            if problem:
                fail(f"cannot list the tools of {server!r} to approve them: {problem}")
            names = list(tools) if tools else None
            if names is None:
                records = manager.records(server)
                skipped = [r.name for r in records if r.flags and not include_flagged]
                names = [r.name for r in records if r.name not in skipped]
                for name in skipped:
                    console.print(
                        f"[yellow]skipped[/] {escape(server)}.{escape(name)}: flagged (name it to approve it)"
                    )
            approved = await manager.approve(server, names, by=who)
            for record in approved:
                console.print(
                    f"[green]approved[/] {escape(record.qualified_name)} {record.sha256[:12]} by {escape(who)}"
                )

    run_async(go())


@app.command()
def serve(
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve MCP on stdin/stdout.")] = False,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="WARDEN_API_KEY", help="API key.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve Warden's agents as MCP tools (``--stdio``; HTTP is served at /mcp by ``warden serve``)."""
    if not stdio:
        fail("only --stdio is served by this command; `warden serve` serves MCP over HTTP at /mcp")
    cfg = config_from(config)
    from warden.protocols.mcp import serve_stdio  # type: ignore[import-not-found,unused-ignore]

    run_async(serve_stdio(cfg, api_key))
