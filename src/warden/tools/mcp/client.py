"""The manager of every configured MCP server: lazy connections (shared, or one per Warden
session for stateful servers), tool discovery checked against pins, and calls as tool results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from warden.config import MCPServerConfig
from warden.errors import ConfigError, WardenError
from warden.tools.base import ToolContext, ToolResult
from warden.tools.mcp.adapter import MCPTool, split_qualified, to_tool_result
from warden.tools.mcp.connection import Connection, MCPTimeout, MCPUnavailable, describe
from warden.tools.mcp.era import Era, EraCache, EraVerdict
from warden.tools.mcp.oauth import build_auth
from warden.tools.mcp.pins import MemoryPins, Pins, Sighting, ToolRecord, ToolStatus
from warden.tools.mcp.poisoning import scan

log = logging.getLogger("warden.mcp")

WILDCARD = "*"


def _progress_line(progress: float, total: float | None, message: str | None) -> str:
    amount = f"{progress:g}/{total:g}" if total else f"{progress:g}"
    return f"progress {amount}{f': {message}' if message else ''}\n"


def disabled_reason(record: ToolRecord) -> str:
    """Why a tool does not run, for the model and the CLI."""
    how = f"an admin can approve it with: warden mcp approve {record.server} {record.name}"
    if record.status is ToolStatus.CHANGED:
        return (
            f"{record.qualified_name} is disabled: its definition changed since it was approved "
            f"(sha256 {str(record.approved_sha256)[:12]}… → {record.sha256[:12]}…); {how}"
        )
    if record.status is ToolStatus.FLAGGED:
        rules = ", ".join(sorted({f.rule.value for f in record.flags}))
        return (
            f"{record.qualified_name} is disabled: poisoning checks flagged its definition ({rules}); {how}"
        )
    return f"{record.qualified_name} is not approved yet; {how}"


class MCPManager:
    """Owns the connections to MCP servers and what Warden knows of their tools."""

    def __init__(
        self,
        servers: Sequence[MCPServerConfig],
        *,
        pins: Pins | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.configs: dict[str, MCPServerConfig] = {s.name: s for s in servers}
        self.pins: Pins = pins if pins is not None else MemoryPins()
        self.eras = EraCache()
        self._log_dir = log_dir
        self._shared: dict[str, Connection] = {}
        self._per_session: dict[str, OrderedDict[str, Connection]] = {}
        self._records: dict[str, dict[str, ToolRecord]] = {}
        self._listed: dict[str, list[str]] = {}
        """Names each server listed at its last discovery (what it offers now)."""
        self._checked: dict[int, int] = {}
        """Connection id → its connect count when its tools were last checked against pins."""
        self._proxies: dict[str, MCPTool] = {}
        self._lock = asyncio.Lock()
        self._discovery_locks: dict[str, asyncio.Lock] = {}
        self._auth: dict[str, httpx2.Auth] = {}
        self._closed = False

    # -- configuration and catalogue -----------------------------------------------------

    def server_names(self) -> list[str]:
        return sorted(self.configs)

    def config(self, server: str) -> MCPServerConfig:
        cfg = self.configs.get(server)
        if cfg is None:
            known = ", ".join(self.server_names()) or "none"
            raise ConfigError(f"unknown MCP server {server!r}; configured MCP servers: {known}")
        return cfg

    def handles(self, name: str) -> bool:
        """Whether a tool name is in an MCP server's namespace (``server.…``)."""
        server, dot, _ = name.partition(".")
        return bool(dot) and server in self.configs

    async def load(self) -> None:
        """Read the pins and remembered eras (no server is contacted)."""
        for record in await self.pins.tools():
            if record.server in self.configs:
                self._remember(record)
        for name, cfg in self.configs.items():
            if cfg.era == "auto":
                era = await self.pins.era(name)
                if era in (Era.LEGACY.value, Era.MODERN.value) and self.eras.get(name) is None:
                    self.eras.remember(name, EraVerdict(Era(era)))

    def _remember(self, record: ToolRecord) -> None:
        self._records.setdefault(record.server, {})[record.name] = record
        proxy = self._proxies.get(record.qualified_name)
        if proxy is not None:
            self._refresh(proxy)

    def _refresh(self, proxy: MCPTool) -> None:
        record = self._records.get(proxy.server, {}).get(proxy.remote_name)
        if record is not None and record.enabled and record.approved_definition is not None:
            proxy.update(record.approved_definition)
        else:
            # Never show the model a definition nobody approved: it may be the poisoned one.
            reason = disabled_reason(record) if record is not None else "not listed by its server yet"
            proxy.description = f"(unavailable: {reason})"

    def _proxy(self, server: str, tool: str) -> MCPTool:
        name = f"{server}.{tool}"
        proxy = self._proxies.get(name)
        if proxy is None:
            proxy = MCPTool(server, tool, self, idempotent=self.configs[server].idempotent)
            self._proxies[name] = proxy
            self._refresh(proxy)
        return proxy

    def resolve(self, pattern: str) -> list[MCPTool]:
        """``server.tool`` → that tool (it may still need approval); ``server.*`` → the
        server's approved tools known now. Contacts no server."""
        try:
            server, tool = split_qualified(pattern)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.config(server)
        if tool == WILDCARD:
            records = self._records.get(server, {})
            listed = self._listed.get(server)
            return [
                self._proxy(server, name)
                for name, record in sorted(records.items())
                if record.enabled and (listed is None or name in listed)
            ]
        return [self._proxy(server, tool)]

    def records(self, server: str) -> list[ToolRecord]:
        return sorted(self._records.get(server, {}).values(), key=lambda r: r.name)

    # -- connections ---------------------------------------------------------------------

    async def _on_era(self, server: str, era: Era) -> None:
        await self.pins.remember_era(server, era.value)

    def _new_connection(self, cfg: MCPServerConfig, label: str) -> Connection:
        auth = None
        if cfg.oauth is not None:
            # One OAuth provider per server: its sessions' connections share the tokens.
            # (A missing secret is left to the connection, which reports it when connecting.)
            auth = self._auth.get(cfg.name)
            if auth is None:
                with contextlib.suppress(WardenError):
                    auth = build_auth(cfg)
                if auth is not None:
                    self._auth[cfg.name] = auth
        return Connection(
            cfg, eras=self.eras, on_era=self._on_era, log_dir=self._log_dir, label=label, auth=auth
        )

    async def connection(self, server: str, owner: str | None = None) -> Connection:
        """The connection for a call: the server's shared one, or ``owner``'s (a Warden session
        or task) for stateful servers. Connecting happens on first use, not here."""
        cfg = self.config(server)
        if self._closed:
            raise MCPUnavailable("Warden is shutting down; MCP connections are closed")
        evicted: Connection | None = None
        async with self._lock:
            if not cfg.stateful or owner is None:
                conn = self._shared.get(server)
                if conn is None:
                    conn = self._shared[server] = self._new_connection(cfg, server)
                return conn
            sessions = self._per_session.setdefault(server, OrderedDict())
            conn = sessions.get(owner)
            if conn is None:
                conn = sessions[owner] = self._new_connection(cfg, f"{server}[{owner}]")
                if len(sessions) > cfg.max_sessions:
                    _, evicted = sessions.popitem(last=False)
            sessions.move_to_end(owner)
        if evicted is not None:
            await evicted.aclose()
        return conn

    async def aclose(self) -> None:
        self._closed = True
        async with self._lock:
            conns = list(self._shared.values())
            for sessions in self._per_session.values():
                conns.extend(sessions.values())
            self._shared.clear()
            self._per_session.clear()
        results = await asyncio.gather(*(c.aclose() for c in conns), return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.debug("closing an MCP connection failed: %s", describe(result))

    # -- discovery -----------------------------------------------------------------------

    async def discover(self, server: str, conn: Connection | None = None) -> list[ToolRecord]:
        """List the server's tools, run the poisoning checks and compare with the pins."""
        cfg = self.config(server)
        conn = conn or await self.connection(server)
        lock = self._discovery_locks.setdefault(server, asyncio.Lock())
        async with lock:
            listed = await conn.list_tools()
            definitions: dict[str, dict[str, Any]] = {}
            for tool in listed:
                definition = tool.model_dump(by_alias=True, mode="json", exclude_none=True)
                if tool.name in definitions:
                    raise MCPUnavailable(f"MCP server {server!r} lists two tools named {tool.name!r}")
                definitions[tool.name] = definition
            others = [n for n in definitions] + [
                f"{s}.{n}" for s, records in self._records.items() if s != server for n in records
            ]
            sightings = [Sighting(d, scan(d, others)) for d in definitions.values()]
            records = await self.pins.record_sightings(server, sightings, auto_approve=cfg.approval == "auto")
            for record in records:
                self._remember(record)
            self._listed[server] = sorted(definitions)
            self._checked[id(conn)] = conn.connects
            for record in records:
                if record.status is ToolStatus.CHANGED:
                    log.warning(
                        "MCP tool %s changed since it was approved; it is disabled", record.qualified_name
                    )
            return [r for r in records if r.name in definitions]

    # -- calls ---------------------------------------------------------------------------

    async def call(self, server: str, tool: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Call ``server.tool``. Every failure of the server (unreachable, crashed, too slow,
        a protocol error) comes back as an error result for the model, never as an exception."""
        name = f"{server}.{tool}"
        try:
            conn = await self.connection(server, ctx.session_id or ctx.task_id)
            await conn.ensure()
            if self._checked.get(id(conn)) != conn.connects:
                # A (re)started server may serve different definitions: check them against
                # the pins before anything runs on this connection.
                await self.discover(server, conn)
            record = self._records.get(server, {}).get(tool)
            if record is None or tool not in self._listed.get(server, ()):
                return ToolResult(
                    f"MCP server {server!r} does not offer a tool named {tool!r}", is_error=True
                )
            if not record.enabled:
                return ToolResult(disabled_reason(record), is_error=True)

            async def progress(value: float, total: float | None, message: str | None) -> None:
                await ctx.emit_output(_progress_line(value, total, message))

            result = await conn.call_tool(tool, arguments, on_progress=progress)
        except (MCPUnavailable, MCPTimeout) as exc:
            return ToolResult(exc.message, is_error=True)
        except MCPError as exc:
            return ToolResult(f"{name} failed: MCP error {exc.code}: {exc.message}", is_error=True)
        except ValidationError as exc:
            return ToolResult(
                f"{name}: the server sent a malformed result: {exc.error_count()} problems", is_error=True
            )
        except WardenError as exc:
            return ToolResult(f"{name}: {exc.message}", is_error=True)
        except Exception as exc:  # a transport failure of any kind is the server's, not the task's
            log.warning("MCP call %s failed", name, exc_info=True)
            return ToolResult(f"{name} failed: {describe(exc)}", is_error=True)
        return to_tool_result(result)

    # -- administration ------------------------------------------------------------------

    async def approve(self, server: str, tools: Sequence[str] | None, *, by: str) -> list[ToolRecord]:
        """Pin the last listed definitions (all of the server's tools, or ``tools``)."""
        self.config(server)
        known = {r.name for r in await self.pins.tools(server)}
        missing = [t for t in tools or () if t not in known]
        if missing:
            raise ConfigError(f"MCP server {server!r} has not listed {', '.join(repr(m) for m in missing)}")
        records = await self.pins.approve(server, tools, by=by)
        for record in records:
            self._remember(record)
        return records
