"""Shared CLI plumbing: the console, configuration loading and turning errors into messages."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from warden.config import WardenConfig, load_config
from warden.errors import WardenError

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def config_from(path: Path | None) -> WardenConfig:
    try:
        return load_config(path)
    except WardenError as exc:
        fail(exc.message)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, printing Warden errors as messages rather than tracebacks."""
    try:
        return asyncio.run(coro)
    except WardenError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        err_console.print("[dim]interrupted[/]")
        raise typer.Exit(130) from None


def api_url(url: str | None) -> str:
    return url or os.environ.get("WARDEN_URL") or DEFAULT_URL


def api_key(key: str | None) -> str:
    found = key or os.environ.get("WARDEN_API_KEY")
    if not found:
        fail(
            "no API key: set WARDEN_API_KEY (the key `warden serve` printed at first start) "
            "or make one with `warden keys create --name me`"
        )
    return found


UrlOpt = Annotated[str | None, typer.Option("--url", help="Warden API URL (or WARDEN_URL).")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (or WARDEN_API_KEY).")]
