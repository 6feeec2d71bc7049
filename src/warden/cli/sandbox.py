"""`warden sandbox …`: create, use and remove sandboxes through the API."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from warden.cli._common import KeyOpt, UrlOpt, api_key, api_url, console, fail, run_async
from warden.client.sandbox import AsyncSandbox, _Api

app = typer.Typer(help="Create, use and remove code sandboxes.", no_args_is_help=True)


def _settings(url: str | None, key: str | None) -> dict[str, Any]:
    return {"url": api_url(url), "api_key": api_key(key)}


@app.command("create")
def create(
    template: Annotated[str | None, typer.Option(help="Sandbox template.")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Start a sandbox (from the template's warm pool when one is waiting)."""

    async def main() -> str:
        sb = await AsyncSandbox.create(template, **_settings(url, key))
        await sb.close()
        return sb.sandbox_id

    console.print(run_async(main()))


@app.command("ls")
def list_sandboxes(url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Your sandboxes."""

    async def main() -> list[dict[str, Any]]:
        api = _Api(api_url(url), api_key(key), 30)
        try:
            result: list[dict[str, Any]] = await api.call("GET", "/v1/sandboxes")
            return result
        finally:
            await api.http.aclose()

    table = Table("id", "template", "backend", "state", "last used", "session", box=None)
    rows = run_async(main())
    for s in rows:
        table.add_row(
            s["id"],
            s["template"],
            s["backend"],
            s["state"],
            (s["last_used_at"] or "")[:19],
            s["session_id"] or "",
        )
    console.print(table if rows else "[dim]no sandboxes[/]")


@app.command("exec")
def exec_command(
    sandbox_id: str,
    command: Annotated[str, typer.Argument(help="Shell command to run in /workspace.")],
    timeout: Annotated[float | None, typer.Option(help="Seconds before it is killed.")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Run a shell command, streaming its output; exits with its exit code."""

    async def main() -> int:
        sb = await AsyncSandbox.connect(sandbox_id, **_settings(url, key))
        try:
            result = await sb.commands.run(
                command,
                timeout=timeout,
                on_stdout=lambda t: (sys.stdout.write(t), sys.stdout.flush()),
                on_stderr=lambda t: (sys.stderr.write(t), sys.stderr.flush()),
            )
        finally:
            await sb.close()
        if result.timed_out:
            console.print("[red]timed out[/]")
            return 124
        return result.exit_code if result.exit_code is not None else 137

    raise typer.Exit(run_async(main()))


@app.command("run")
def run_code(
    sandbox_id: str,
    code: Annotated[str | None, typer.Option("--code", "-c", help="Python to run.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A Python file to run.")] = None,
    context: Annotated[
        str, typer.Option(help="Interpreter context (state persists per context).")
    ] = "default",
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Run Python in a stateful context and print its output and value."""
    if (code is None) == (file is None):
        fail("give exactly one of --code or --file")
    source = code if code is not None else file.read_text(encoding="utf-8") if file else ""

    async def main() -> int:
        sb = await AsyncSandbox.connect(sandbox_id, **_settings(url, key))
        try:
            execution = await sb.run_code(
                source, context=context, on_stdout=lambda t: (sys.stdout.write(t), sys.stdout.flush())
            )
        finally:
            await sb.close()
        if execution.text is not None:
            console.print(f"[cyan]Out:[/] {escape(execution.text)}", highlight=False)
        for result in execution.results:
            console.print(f"[dim]({result.type} result, {len(result.data)} base64 characters)[/]")
        if execution.error is not None:
            console.print(
                escape(execution.error.traceback or f"{execution.error.name}: {execution.error.value}")
            )
            return 1
        return 0

    raise typer.Exit(run_async(main()))


@app.command("rm")
def remove(sandbox_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Destroy a sandbox and its workspace."""

    async def main() -> None:
        sb = await AsyncSandbox.connect(sandbox_id, **_settings(url, key))
        try:
            await sb.kill()
        finally:
            await sb.close()

    run_async(main())
    console.print(f"removed {sandbox_id}")


@app.command("snapshot")
def snapshot(sandbox_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Save memory and files; prints the snapshot id."""

    async def main() -> str:
        sb = await AsyncSandbox.connect(sandbox_id, **_settings(url, key))
        try:
            return await sb.create_snapshot()
        finally:
            await sb.close()

    console.print(run_async(main()))


@app.command("restore")
def restore(snapshot_id: str, url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Start a new sandbox from a snapshot; prints its id."""

    async def main() -> str:
        sb = await AsyncSandbox.restore(snapshot_id, **_settings(url, key))
        await sb.close()
        return sb.sandbox_id

    console.print(run_async(main()))
