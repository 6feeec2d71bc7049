"""One connection to one MCP server, held open by an owner task: connect with a deadline and
reconnection backoff, era negotiation, and calls with idle and maximum deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client._transport import Transport, TransportStreams
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST

from warden import __version__
from warden.config import MCPServerConfig
from warden.errors import WardenError
from warden.tools.mcp.elicitation import elicitation_policy
from warden.tools.mcp.era import Era, EraCache, EraVerdict, client_mode, era_of
from warden.tools.mcp.oauth import build_auth

log = logging.getLogger("warden.mcp")

T = TypeVar("T")

ProgressSink = Callable[[float, float | None, str | None], Awaitable[None]]
EraListener = Callable[[str, Era], Awaitable[None]]

MAX_LIST_PAGES = 100
"""A server whose tools/list never ends cannot hang Warden."""
MAX_BACKOFF = 30.0
CLOSE_TIMEOUT = 10.0
"""Seconds a closing connection gets (the stdio transport's own shutdown is bounded below this)."""


class MCPUnavailable(WardenError):
    """The MCP server could not be started, reached or kept: a tool error for the model."""

    code = "mcp_unavailable"
    http_status = 502


class MCPTimeout(WardenError):
    """A call ran past its deadline; the server was told to cancel it."""

    code = "mcp_timeout"
    http_status = 504


def describe(exc: BaseException) -> str:
    """One line for an exception that may be a group from the transport's task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _closed(client: Client) -> bool:
    # The SDK has no public "is the transport still up" query; its dispatcher marks EOF here.
    dispatcher = getattr(client.session, "_dispatcher", None)
    return bool(getattr(dispatcher, "_closed", False))


def _session_gone(exc: MCPError) -> bool:
    """A 404 on a known session: the server forgot us (restart, expiry); nothing ran. The SDK
    says "Session terminated", or passes on the server's own JSON-RPC error ("Session not found")."""
    return exc.code == INVALID_REQUEST and "session" in exc.message.lower()


@asynccontextmanager
async def _http_transport(
    url: str, headers: dict[str, str], auth: httpx2.Auth | None = None
) -> AsyncIterator[TransportStreams]:
    async with (
        create_mcp_http_client(headers=headers, auth=auth) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


class Connection:
    """A connection to one server (shared, or one Warden session's for stateful servers).

    The `mcp.Client` lives inside one owner task, because its transport's task groups must be
    entered and left by the same task; callers in any task send requests through it.
    """

    def __init__(
        self,
        config: MCPServerConfig,
        *,
        eras: EraCache,
        on_era: EraListener | None = None,
        log_dir: Path | None = None,
        label: str | None = None,
        auth: httpx2.Auth | None = None,
    ) -> None:
        """``auth``: the server's OAuth provider, shared by its connections (it holds the
        tokens); built from ``config.oauth`` when not given."""
        self.config = config
        self._auth = auth
        self.label = label or config.name
        self._eras = eras
        self._on_era = on_era
        self._log_dir = log_dir
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._errlog: TextIO | None = None
        self._closed = False
        self.connects = 0
        """Successful connections so far (a reconnect adds one)."""
        self.last_used = 0.0

    # -- lifetime ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and not _closed(self._client)

    @property
    def protocol_version(self) -> str | None:
        return self._client.protocol_version if self._client is not None else None

    async def aclose(self) -> None:
        self._closed = True
        async with self._lock:
            await self._drop()
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None

    async def _drop(self) -> None:
        """Close the current client, if any (the owner task leaves ``async with Client``)."""
        owner, stop = self._owner, self._stop
        self._client = self._owner = self._stop = None
        if owner is None or stop is None:
            return
        stop.set()
        done, _ = await asyncio.wait({owner}, timeout=CLOSE_TIMEOUT)
        if not done:
            owner.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(owner, CLOSE_TIMEOUT)

    async def ensure(self) -> Client:
        """The live client, connecting (with backoff between attempts) when there is none."""
        if self._closed:
            raise MCPUnavailable(f"MCP server {self.label!r}: the connection is closed")
        client = self._client
        if client is not None and not _closed(client):
            return client
        async with self._lock:
            client = self._client
            if client is not None and not _closed(client):
                return client
            await self._drop()
            delay = self.config.reconnect_backoff
            last: MCPUnavailable | None = None
            for attempt in range(self.config.max_reconnects + 1):
                if attempt:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                try:
                    return await self._connect()
                except MCPUnavailable as exc:
                    last = exc
                    log.warning(
                        "MCP server %s: connection attempt %d failed: %s",
                        self.label,
                        attempt + 1,
                        exc.message,
                    )
            assert last is not None
            raise last

    async def _connect(self) -> Client:
        setting = self.config.era
        cached = self._eras.get(self.config.name)
        mode = client_mode(setting, cached)
        try:
            client = await self._open(mode)
        except MCPUnavailable as exc:
            if mode != "auto" or setting != "auto":
                raise
            # A strict legacy server may exit on the server/discover probe: try the handshake
            # alone, and remember the verdict so later connections skip the probe.
            log.info(
                "MCP server %s: the era probe failed (%s); trying the legacy handshake",
                self.label,
                exc.message,
            )
            client = await self._open("legacy")
        version = client.protocol_version
        era = era_of(version)
        if setting == "modern" and era is Era.LEGACY:
            await self._drop()
            raise MCPUnavailable(
                f"MCP server {self.label!r} speaks only the legacy era ({version}) "
                "but its configuration says era: modern"
            )
        previous = self._eras.get(self.config.name)
        self._eras.remember(self.config.name, EraVerdict(era, version, client.session.discover_result))
        if setting == "auto" and (previous is None or previous.era is not era) and self._on_era is not None:
            try:
                await self._on_era(self.config.name, era)
            except WardenError as exc:  # remembering is an optimisation, not a reason to fail
                log.warning("MCP server %s: cannot store its era: %s", self.label, exc.message)
        self.connects += 1
        return client

    def _transport(self) -> Transport:
        cfg = self.config
        if cfg.transport == "stdio":
            assert cfg.command is not None
            params = StdioServerParameters(
                command=cfg.command,
                args=list(cfg.args),
                env=dict(cfg.env) or None,
                cwd=str(cfg.cwd) if cfg.cwd is not None else None,
            )
            return stdio_client(params, errlog=self._stderr())
        assert cfg.url is not None
        headers = dict(cfg.headers)
        token = cfg.bearer_token()
        if cfg.bearer_token_env and token is None:
            raise MCPUnavailable(
                f"MCP server {self.label!r}: the environment variable {cfg.bearer_token_env} "
                "(its bearer token) is not set"
            )
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cfg.oauth is not None and self._auth is None:
            try:
                self._auth = build_auth(cfg)
            except WardenError as exc:
                raise MCPUnavailable(exc.message) from None
        return _http_transport(cfg.url, headers, self._auth)

    def _stderr(self) -> TextIO:
        """Where a stdio server's stderr goes: a log file per server under Warden's home."""
        if self._log_dir is None:
            return sys.stderr
        if self._errlog is None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            self._errlog = open(self._log_dir / f"{self.config.name}.log", "a", encoding="utf-8")  # noqa: SIM115
        return self._errlog

    async def _open(self, mode: str) -> Client:
        """Start an owner task that enters a `Client` and keeps it open until told to stop."""
        client = Client(
            self._transport(),
            mode=mode,
            cache=None,  # tools/list must reach the server: pins compare what it says now
            client_info=types.Implementation(name="warden", version=__version__),
            elicitation_callback=elicitation_policy(self.config.elicitation),
        )
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        stop = asyncio.Event()

        async def own() -> None:
            try:
                async with client:
                    if not ready.done():
                        ready.set_result(None)
                    await stop.wait()
            except asyncio.CancelledError:
                if not ready.done():
                    ready.cancel()
                raise
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    log.info("MCP server %s: connection ended: %s", self.label, describe(exc))

        owner = asyncio.create_task(own(), name=f"mcp:{self.label}")
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                await asyncio.shield(ready)
        except BaseException as exc:
            stop.set()
            owner.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(owner, CLOSE_TIMEOUT)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, TimeoutError):
                raise MCPUnavailable(
                    f"MCP server {self.label!r} did not finish connecting within {self.config.connect_timeout:g}s"
                ) from None
            raise MCPUnavailable(f"MCP server {self.label!r} is unavailable: {describe(exc)}") from None
        self._client, self._owner, self._stop = client, owner, stop
        return client

    # -- requests ------------------------------------------------------------------------

    async def request(self, op: Callable[[Client], Awaitable[T]]) -> T:
        """Run ``op`` on the live client. A request the server never saw (a closed transport
        before sending, a forgotten HTTP session) is sent again once on a new connection."""
        for attempt in range(2):
            client = await self.ensure()
            self.last_used = asyncio.get_running_loop().time()
            try:
                return await op(client)
            except MCPError as exc:
                if attempt == 0 and _session_gone(exc):
                    log.info("MCP server %s: session expired; initialising a new one", self.label)
                    await self._reset(client)
                    continue
                if exc.code == CONNECTION_CLOSED:
                    await self._reset(client)
                    raise MCPUnavailable(
                        f"MCP server {self.label!r} closed the connection during the request "
                        "(it may have crashed); Warden reconnects on the next call"
                    ) from None
                raise
        raise AssertionError("unreachable")

    async def _reset(self, client: Client) -> None:
        async with self._lock:
            if self._client is client:
                await self._drop()

    async def list_tools(self) -> list[types.Tool]:
        async def walk(client: Client) -> list[types.Tool]:
            tools: list[types.Tool] = []
            cursor: str | None = None
            with anyio.fail_after(self.config.call_timeout):
                for _ in range(MAX_LIST_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
            return tools

        try:
            return await self.request(walk)
        except TimeoutError:
            raise MCPTimeout(
                f"MCP server {self.label!r} did not list its tools within {self.config.call_timeout:g}s"
            ) from None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, on_progress: ProgressSink | None = None
    ) -> types.CallToolResult:
        """Call a tool. The call may go ``call_timeout`` seconds without a result or progress
        and ``max_call_timeout`` seconds in all; past either, the SDK sends
        ``notifications/cancelled`` as the wait is cancelled, and `MCPTimeout` is raised."""
        cfg = self.config
        loop = asyncio.get_running_loop()

        async def call(client: Client) -> types.CallToolResult:
            # An anyio scope rather than asyncio.timeout: the SDK's own anyio scopes would
            # absorb an asyncio cancellation; leaving this scope sends notifications/cancelled.
            started = anyio.current_time()
            hard_deadline = started + cfg.max_call_timeout
            with anyio.CancelScope(deadline=min(started + cfg.call_timeout, hard_deadline)) as scope:

                async def progress(progress: float, total: float | None, message: str | None) -> None:
                    scope.deadline = min(anyio.current_time() + cfg.call_timeout, hard_deadline)
                    if on_progress is not None:
                        await on_progress(progress, total, message)

                return await client.call_tool(name, arguments, progress_callback=progress)
            raise TimeoutError

        started = loop.time()
        try:
            return await self.request(call)
        except TimeoutError:
            took = loop.time() - started
            limit = (
                f"its maximum of {cfg.max_call_timeout:g}s"
                if took >= cfg.max_call_timeout - 0.05
                else f"{cfg.call_timeout:g}s without a result or progress"
            )
            raise MCPTimeout(
                f"{self.config.name}.{name} ran past {limit}; Warden asked the server to cancel it"
            ) from None
