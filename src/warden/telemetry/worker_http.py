"""The worker-only process's small HTTP face (``telemetry.worker_port``): ``/healthz``,
``/readyz`` (the database answers) and ``/metrics``, for probes and scrapers. A few lines of
asyncio streams rather than a second ASGI server, so it cannot touch the worker's signal
handling; requests are GETs without bodies, read under a deadline and a size cap."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from warden.telemetry.metrics import REGISTRY
from warden.telemetry.queue_stats import QueueGauges

if TYPE_CHECKING:
    from warden.runtime import Runtime

log = logging.getLogger("warden.telemetry")

_MAX_HEAD = 16 * 1024
_READ_DEADLINE = 5.0


@asynccontextmanager
async def worker_endpoints(runtime: Runtime, host: str, port: int | None) -> AsyncIterator[int | None]:
    """Serve while the block runs; yields the bound port (None: no port configured)."""
    if port is None:
        yield None
        return
    gauges = QueueGauges(runtime.db)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_DEADLINE):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await _answer(runtime, gauges, host, head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        try:
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=_MAX_HEAD)
    bound = server.sockets[0].getsockname()[1]
    log.info("worker endpoints on http://%s:%d (/healthz, /readyz, /metrics)", host, bound)
    try:
        yield bound
    finally:
        server.close()
        await server.wait_closed()


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


async def _answer(runtime: Runtime, gauges: QueueGauges, host: str, head: bytes) -> tuple[int, str, bytes]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return 400, "text/plain", b"bad request\n"
    method, target, _ = parts
    path = target.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return 405, "text/plain", b"method not allowed\n"
    if path == "/healthz":
        return 200, "application/json", b'{"status":"ok"}'
    if path == "/readyz":
        try:
            async with asyncio.timeout(5.0):
                await runtime.db.ping()
        except Exception:
            log.warning("readiness: database check failed", exc_info=True)
            return 503, "application/json", b'{"status":"unavailable","checks":{"database":"unreachable"}}'
        return 200, "application/json", b'{"status":"ok","checks":{"database":"ok"}}'
    if path == "/metrics":
        if not await _allowed(runtime, host, lines[1:]):
            return 401, "text/plain", b"/metrics needs the metrics token or an admin API key\n"
        return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY) + await gauges.render()
    return 404, "text/plain", b"not found\n"


async def _allowed(runtime: Runtime, host: str, header_lines: list[str]) -> bool:
    telemetry = runtime.config.telemetry
    if telemetry.metrics_open_for(host):
        return True
    token = None
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            scheme, _, credential = value.strip().partition(" ")
            token = credential.strip() if scheme.lower() == "bearer" else value.strip()
    if not token:
        return False
    expected = telemetry.metrics_token()
    if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
        return True
    try:
        principal = await runtime.keys.authenticate(token)
    except Exception:
        return False
    return "admin" in principal.scopes
