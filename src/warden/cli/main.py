"""The command tree. Commands are thin: they parse options, call the runtime or the HTTP
client, and print; errors become one red line, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import socket
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from warden.cli import _logging
from warden.cli._common import KeyOpt, UrlOpt, api_key, api_url, config_from, console, fail, run_async
from warden.cli.approvals import app as approvals_app
from warden.cli.audit import app as audit_app
from warden.cli.doctor import doctor as doctor_command
from warden.cli.mcp import app as mcp_app
from warden.cli.prune import prune as prune_command
from warden.cli.render import StreamRenderer
from warden.cli.sandbox import app as sandbox_app
from warden.client.http import WardenClient
from warden.service.keys import NewKey

app = typer.Typer(
    help="Warden: run LLM agents in production.", no_args_is_help=True, pretty_exceptions_enable=False
)
tasks_app = typer.Typer(help="List, inspect, cancel and follow tasks.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Create, list and revoke API keys (works on the database directly).", no_args_is_help=True
)
app.add_typer(tasks_app, name="tasks")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(keys_app, name="keys")
app.add_typer(mcp_app, name="mcp")
app.add_typer(audit_app, name="audit")
app.add_typer(approvals_app, name="approvals")
app.command("doctor")(doctor_command)
app.command("prune")(prune_command)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@app.callback()
def _global_options(
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            envvar="WARDEN_LOG_FORMAT",
            help="Log lines as text, or as JSON with task_id and trace_id (serve, worker, demo).",
        ),
    ] = LogFormat.TEXT,
) -> None:
    _logging.use_format(log_format.value)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="warden.yaml to read.", exists=False)]


class Role(StrEnum):
    ALL = "all"
    API = "api"
    WORKER = "worker"


def _show_bootstrap_key(key: NewKey) -> None:
    console.print(
        Panel.fit(
            f"[bold]{key.secret}[/]\n\nThis admin key of tenant [bold]{key.info.tenant}[/] is shown once.\n"
            f"Use it with: [cyan]export WARDEN_API_KEY={key.secret}[/]",
            title="Warden's first start: your admin API key",
            border_style="green",
        )
    )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", min=0, max=65535)] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker loops in this process.", min=0)] = 1,
    role: Annotated[
        Role, typer.Option(help="all: API and workers; api: API only; worker: workers only.")
    ] = Role.ALL,
) -> None:
    """Serve the HTTP API and run workers in one process."""
    from warden.api.app import create_app
    from warden.api.server import server_for

    cfg = config_from(config)
    _check_startable(cfg)
    if role is Role.WORKER:
        _run_workers(cfg, workers or 1)
        return
    log_path = _logging.setup(cfg.home, cfg.log_level)
    bind_host, bind_port = host or cfg.server.host, cfg.server.port if port is None else port
    n_workers = 0 if role is Role.API else workers
    application = create_app(cfg, workers=n_workers, on_bootstrap_key=_show_bootstrap_key)
    console.print(
        f"[bold]Warden[/] on [cyan]http://{bind_host}:{bind_port}[/] (docs at /docs) · "
        f"{n_workers} worker(s) · database {escape(_safe_url(cfg.resolved_database_url))} · log {log_path}"
    )
    server_for(application, host=bind_host, port=bind_port).run()


def _check_startable(cfg: Any) -> None:
    """Open and close the runtime once, so a bad agent, tool, model or policy file is one clear
    line here rather than a traceback from inside the server's start-up."""
    from warden.runtime import Runtime

    async def check() -> None:
        await (await Runtime.open(cfg)).close()

    run_async(check())


def _warden_command() -> str:
    """How to call this CLI as installed: `warden` when it is on PATH, else its full path."""
    import shutil

    if shutil.which("warden"):
        return "warden"
    script = Path(sys.executable).with_name("warden")
    return str(script) if script.exists() else f"{sys.executable} -m warden"


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(invalid URL)"


def _run_workers(cfg: Any, count: int, concurrency: int | None = None) -> None:
    from warden.runtime import Runtime
    from warden.telemetry.worker_http import worker_endpoints
    from warden.worker.worker import Worker

    _logging.setup(cfg.home, cfg.log_level)

    async def main() -> None:
        runtime = await Runtime.open(cfg)
        await runtime.start_background()
        pool = [Worker(runtime, concurrency=concurrency) for _ in range(count)]
        loop = asyncio.get_running_loop()

        def stop_all() -> None:
            for w in pool:
                w.request_stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_all)
        console.print(f"[bold]Warden worker[/] × {count} (pid {os.getpid()}) — SIGTERM stops it gracefully")
        try:
            # Probes and scrapers of a worker-only process (telemetry.worker_port; off by default).
            async with worker_endpoints(runtime, cfg.server.host, cfg.telemetry.worker_port):
                await asyncio.gather(*(w.run() for w in pool))
        finally:
            await runtime.close()

    run_async(main())


@app.command()
def worker(
    config: ConfigOpt = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks run at once.", min=1)] = None,
) -> None:
    """Run a worker process (no HTTP API)."""
    _run_workers(config_from(config), 1, concurrency)


@app.command()
def run(
    text: Annotated[str, typer.Argument(help="What the agent should do.")],
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent name.")] = "demo",
    session: Annotated[str | None, typer.Option(help="Continue this session.")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Print the task id and return.")] = False,
) -> None:
    """Submit a task and watch it live: tokens, tool calls and results."""

    async def main() -> int:
        async with WardenClient(api_url(url), api_key(key)) as client:
            accepted = await client.submit(agent, text, session_id=session)
            console.print(
                f"[dim]task {accepted['id']} · session {accepted.get('session_id')} · {accepted['status']}[/]"
            )
            if detach:
                return 0
            final = await StreamRenderer(console).run(client.events(accepted["id"]))
            if final is None:
                return 1
            if final["type"] == "task.completed":
                return 0
            return 2 if final["type"] == "task.failed" else 3

    raise typer.Exit(run_async(main()))


# -- tasks ---------------------------------------------------------------------------------


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


_STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "awaiting_approval": "magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


@tasks_app.command("list")
def tasks_list(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """The newest tasks."""

    async def main() -> dict[str, Any]:
        async with WardenClient(api_url(url), api_key(key)) as client:
            return await client.tasks(status=status, agent=agent, limit=limit)

    page = run_async(main())
    table = Table("id", "status", "agent", "created (UTC)", "tokens", "input", box=None)
    for t in page["items"]:
        style = _STATUS_STYLE.get(t["status"], "")
        table.add_row(
            t["id"],
            f"[{style}]{t['status']}[/]",
            f"{t['agent']}@{t['agent_version']}",
            _when(t["timings"]["created_at"]),
            str(t["usage"]["total"]["total_tokens"]),
            escape(t["input"][:50].replace("\n", " ")),
        )
    console.print(table if page["items"] else "[dim]no tasks[/]")


@tasks_app.command("show")
def tasks_show(task_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """One task: status, output or error, usage and timings."""

    async def main() -> dict[str, Any]:
        async with WardenClient(api_url(url), api_key(key)) as client:
            return await client.task(task_id)

    t = run_async(main())
    timings = t["timings"]
    lines = [
        f"[bold]status[/]   [{_STATUS_STYLE.get(t['status'], '')}]{t['status']}[/] (attempt {t['attempt']}/{t['max_attempts']})",
        f"[bold]agent[/]    {t['agent']}@{t['agent_version']}   [bold]session[/] {t['session_id']}",
        f"[bold]created[/]  {_when(timings['created_at'])}   queue wait {timings['queue_wait_ms']} ms   "
        f"duration {timings['duration_ms']} ms",
        f"[bold]tokens[/]   {t['usage']['total']['input_tokens']} in / {t['usage']['total']['output_tokens']} out "
        f"({', '.join(t['usage']['by_model']) or 'none'})",
        f"[bold]input[/]    {escape(t['input'])}",
    ]
    if t["output"] is not None:
        lines.append(f"[bold]output[/]   {escape(str(t['output']))}")
    if t["error"]:
        lines.append(
            f"[bold red]error[/]    {escape(t['error'].get('code', ''))}: {escape(t['error'].get('message', ''))}"
        )
    console.print(Panel("\n".join(lines), title=t["id"], highlight=False))


@tasks_app.command("cancel")
def tasks_cancel(task_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Cancel a task (a running one stops within a second)."""

    async def main() -> dict[str, Any]:
        async with WardenClient(api_url(url), api_key(key)) as client:
            return await client.cancel(task_id)

    t = run_async(main())
    note = " (cancel requested)" if t["cancel_requested"] and t["status"] != "cancelled" else ""
    console.print(f"{t['id']}: {t['status']}{note}")


@tasks_app.command("logs")
def tasks_logs(
    task_id: str,
    after: Annotated[int, typer.Option(help="Start after this event seq.", min=0)] = 0,
    raw: Annotated[bool, typer.Option("--json", help="Print events as JSON lines.")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """A task's events, then live ones until it ends."""
    import json

    async def main() -> None:
        async with WardenClient(api_url(url), api_key(key)) as client:
            if raw:
                async for event in client.events(task_id, after=after):
                    sys.stdout.write(json.dumps(event) + "\n")
                    sys.stdout.flush()
            else:
                await StreamRenderer(console).run(client.events(task_id, after=after))

    run_async(main())


# -- keys ----------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for.")],
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to (created if new).")] = "default",
    scope: Annotated[
        list[str] | None, typer.Option(help="Scope (repeat): admin, tasks:read, tasks:write, pii:read.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API key; it is printed once."""
    from warden.governance.audit import AuditLog
    from warden.service.keys import KeyService
    from warden.store import Database, upgrade

    cfg = config_from(config)

    async def main() -> NewKey:
        db = Database(cfg.resolved_database_url)
        try:
            await upgrade(db)
            keys = KeyService(db, audit=AuditLog.from_env(db))
            return await keys.create(tenant, name=name, scopes=scope, actor=_cli_actor())
        finally:
            await db.dispose()

    new = run_async(main())
    console.print(f"[bold]{new.secret}[/]")
    console.print(
        f"[dim]key {new.info.id} · tenant {new.info.tenant} · scopes {', '.join(new.info.scopes)} · shown once[/]"
    )


def _cli_actor() -> str:
    """Who ran an admin command, for the audit log: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"cli:uid-{os.getuid()}"


@keys_app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """All API keys (never their secrets)."""
    from warden.service.keys import KeyInfo, KeyService
    from warden.store import Database, upgrade

    cfg = config_from(config)

    async def main() -> list[KeyInfo]:
        db = Database(cfg.resolved_database_url)
        try:
            await upgrade(db)
            return await KeyService(db).list()
        finally:
            await db.dispose()

    table = Table("id", "prefix", "tenant", "name", "scopes", "created (UTC)", "state", box=None)
    for k in run_async(main()):
        created = datetime.fromtimestamp(k.created_at, UTC).strftime("%Y-%m-%d %H:%M")
        state = "[red]revoked[/]" if k.revoked_at else "[green]active[/]"
        table.add_row(k.id, k.prefix, escape(k.tenant), escape(k.name), ", ".join(k.scopes), created, state)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="Key id or prefix.")], config: ConfigOpt = None
) -> None:
    """Revoke an API key at once."""
    from warden.governance.audit import AuditLog
    from warden.service.keys import KeyInfo, KeyService
    from warden.store import Database, upgrade

    cfg = config_from(config)

    async def main() -> KeyInfo:
        db = Database(cfg.resolved_database_url)
        try:
            await upgrade(db)
            return await KeyService(db, audit=AuditLog.from_env(db)).revoke(key, actor=_cli_actor())
        finally:
            await db.dispose()

    info = run_async(main())
    console.print(f"revoked {info.id} ({info.prefix}, {escape(info.name)})")


# -- demo ----------------------------------------------------------------------------------

DEMO_INPUT = "What time is it in UTC, and what is 1234 × 5678? Keep a note of the result for me."


@app.command()
def demo(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="Port for the API (a free one if taken).")] = 8080,
    stay: Annotated[
        bool | None, typer.Option(help="Keep serving after the demo (default: when run in a terminal).")
    ] = None,
) -> None:
    """Start Warden, run the demo agent live in this terminal, and say where everything is."""
    from warden.api.app import create_app
    from warden.api.server import server_for
    from warden.runtime import Runtime

    cfg = config_from(config)
    log_path = _logging.setup(cfg.home, cfg.log_level, console=False)
    host = "127.0.0.1"
    if not _port_free(host, port):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    keep = stay if stay is not None else (sys.stdin.isatty() and not os.environ.get("CI"))

    async def main() -> int:
        runtime = await Runtime.open(cfg)
        model = cfg.models["default"]
        if model.provider == "scripted":
            console.print(
                Panel.fit(
                    "No model endpoint is configured, so this demo uses Warden's [bold]scripted model[/]: it replays "
                    "a fixed script over the real agent loop, tools, queue and event stream.\n"
                    "Set [cyan]OPENAI_API_KEY[/] (and optionally [cyan]OPENAI_BASE_URL[/], [cyan]OPENAI_MODEL[/]) "
                    "or configure warden.yaml to run the same demo on a real model.",
                    title="scripted model",
                    border_style="yellow",
                )
            )
        else:
            console.print(
                f"[bold]model[/]: {model.provider} · {escape(model.model)} · {escape(model.base_url or 'default endpoint')}"
            )
        await runtime.keys.bootstrap()
        key = await runtime.keys.create("default", name="demo", scopes=["admin"])
        application = create_app(cfg, workers=1, runtime=runtime)
        server = server_for(application, host=host, port=port)
        serving = asyncio.create_task(server.serve())
        url = f"http://{host}:{port}"
        try:
            for _ in range(200):
                if server.started or serving.done():
                    break
                await asyncio.sleep(0.05)
            if not server.started:
                fail(f"the API did not start on {url}; see {log_path}")
            console.rule("[bold]Warden demo")
            console.print(f"[bold]you ›[/] {escape(DEMO_INPUT)}")
            async with WardenClient(url, key.secret) as client:
                accepted = await client.submit("demo", DEMO_INPUT)
                final = await StreamRenderer(console).run(client.events(accepted["id"]))
                task = await client.task(accepted["id"])
            console.rule()
            total = task["usage"]["total"]
            console.print(
                f"task [bold]{task['id']}[/] {task['status']} in {task['timings']['duration_ms']:.0f} ms · "
                f"{total['input_tokens']} tokens in, {total['output_tokens']} out"
            )
            console.print(
                Panel.fit(
                    f"API        {url}/v1\n"
                    f"API docs   {url}/docs\n"
                    f"events     {url}/v1/tasks/{task['id']}/events\n"
                    f"logs       {log_path}\n"
                    f"database   {_safe_url(cfg.resolved_database_url)}\n"
                    f"API key    {key.secret}\n\n"
                    f"Try: [cyan]WARDEN_URL={url} WARDEN_API_KEY={key.secret} {_warden_command()} run "
                    '"what is 2**32?"[/]',
                    title="where things are",
                    border_style="cyan",
                )
            )
            if keep:
                console.print("[dim]Warden keeps serving; press Ctrl-C to stop.[/]")
                with contextlib.suppress(asyncio.CancelledError):
                    await serving
            return 0 if final is not None and final["type"] == "task.completed" else 1
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await serving
            await runtime.close()

    raise typer.Exit(run_async(main()))
