"""The host end of sandbox egress: an HTTP proxy (CONNECT and absolute-form requests) that
serves the channels of a sandbox's egress tunnel. It decides on the name before any DNS lookup,
then on every address it resolved, and connects only to an address it checked (so a name that
re-resolves elsewhere cannot slip past). Each decision is logged with its rule."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from warden.netpolicy import EgressPolicy, IPAddress, Verdict, literal_address
from warden.sandbox.guest.tunnel import Channel, splice

log = logging.getLogger("warden.sandbox.egress")

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 15.0
RESOLVE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
_HOP_BY_HOP = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization", b"proxy-authenticate",
     b"te", b"trailer", b"upgrade"}
)  # fmt: skip

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]


@dataclass(frozen=True, slots=True)
class EgressDecision:
    sandbox_id: str
    host: str
    port: int
    verdict: Verdict
    address: str | None = None
    """The address connected to, when allowed."""


class ProxyRefusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The host's resolver (getaddrinfo runs in asyncio's thread pool, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = literal_address(str(sockaddr[0]).split("%")[0])
        if address is not None and address not in found:
            found.append(address)
    return found


class EgressProxy:
    """Serves one sandbox's tunnel channels, one HTTP proxy request each."""

    def __init__(
        self,
        policy: EgressPolicy,
        sandbox_id: str,
        *,
        resolver: Resolver = system_resolver,
        on_decision: Callable[[EgressDecision], None] | None = None,
    ) -> None:
        self.policy = policy
        self.sandbox_id = sandbox_id
        self._resolver = resolver
        self._on_decision = on_decision

    async def serve(self, channel: Channel) -> None:
        try:
            head, rest = await _read_head(channel)
            method, target, headers = _parse_head(head)
            host, port, forward = _target(method, target, headers)
            address = await self.decide(host, port)
            reader, writer = await _connect(address, port)
        except ProxyRefusal as refusal:
            await _refuse(channel, refusal)
            return
        try:
            if forward is None:
                await channel.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                writer.write(forward)
            writer.write(rest)
            await splice(channel, reader, writer)
        finally:
            writer.close()

    async def decide(self, host: str, port: int) -> IPAddress:
        """The checked address to connect to, or `ProxyRefusal` (403) with the rule's reason."""
        verdict, address = await self._decide(host, port)
        decision = EgressDecision(self.sandbox_id, host, port, verdict, str(address) if address else None)
        log.info(
            "egress %s %s:%d from sandbox %s (%s; rule %s)",
            "allowed" if verdict.allowed else "denied", host, port, self.sandbox_id, verdict.reason, verdict.rule,
        )  # fmt: skip
        if self._on_decision is not None:
            self._on_decision(decision)
        if not verdict.allowed or address is None:
            raise ProxyRefusal(403, verdict.reason)
        return address

    async def _decide(self, host: str, port: int) -> tuple[Verdict, IPAddress | None]:
        denied = self.policy.check_port(port)
        if denied is not None:
            return denied, None
        literal = literal_address(host)
        if literal is not None:
            verdict = self.policy.check_address(literal)
            return verdict, literal if verdict.allowed else None
        by_name = self.policy.check_name(host)
        if not by_name.allowed:
            return by_name, None
        name = host.lower().rstrip(".")
        pinned = self.policy.hosts.get(name)
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT):
                addresses = list(pinned) if pinned is not None else await self._resolver(name, port)
        except (OSError, TimeoutError) as exc:
            return Verdict(False, f"{name} does not resolve: {exc or 'timed out'}", by_name.rule), None
        last = Verdict(False, f"{name} has no address", by_name.rule)
        for address in addresses:
            last = self.policy.check_address(address, via_name=name)
            if last.allowed:
                return last, address
        return last, None


async def _read_head(channel: Channel) -> tuple[bytes, bytes]:
    """The request head (through the blank line) and whatever followed it."""
    buffer = bytearray()
    try:
        async with asyncio.timeout(HEAD_TIMEOUT):
            while (end := buffer.find(b"\r\n\r\n")) < 0:
                if len(buffer) > MAX_HEAD:
                    raise ProxyRefusal(431, "the request head is too large")
                chunk = await channel.read()
                if not chunk:
                    raise ProxyRefusal(400, "the connection ended before a request")
                buffer += chunk
    except TimeoutError:
        raise ProxyRefusal(408, "no request within the deadline") from None
    return bytes(buffer[: end + 4]), bytes(buffer[end + 4 :])


def _parse_head(head: bytes) -> tuple[str, str, list[tuple[bytes, bytes]]]:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError as exc:
        raise ProxyRefusal(400, f"not an HTTP request: {exc}") from None
    if not isinstance(event, h11.Request):
        raise ProxyRefusal(400, "not an HTTP request")
    return (
        event.method.decode("ascii", "replace"),
        event.target.decode("ascii", "replace"),
        list(event.headers.raw_items()),
    )


def _target(method: str, target: str, headers: list[tuple[bytes, bytes]]) -> tuple[str, int, bytes | None]:
    """(host, port, the request to forward upstream; None for a CONNECT tunnel)."""
    if method == "CONNECT":
        host, sep, port_text = target.rpartition(":")
        if not sep or not host:
            raise ProxyRefusal(400, f"CONNECT needs host:port, not {target!r}")
        return _host(host), _port(port_text), None
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise ProxyRefusal(400, "send absolute http:// URLs, or CONNECT for https (this is a forward proxy)")
    try:
        port = url.port or 80
    except ValueError:
        raise ProxyRefusal(400, f"bad port in {target!r}") from None
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + url.netloc.rpartition("@")[2].encode()]
    for name, value in headers:
        if name.lower() not in _HOP_BY_HOP and name.lower() != b"host":
            lines.append(name + b": " + value)
    # One request per connection: a later request on a kept-alive connection could name
    # another host, and this proxy decides per connection.
    lines.append(b"Connection: close")
    return _host(url.hostname), port, b"\r\n".join(lines) + b"\r\n\r\n"


def _host(text: str) -> str:
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/@?#" for c in host) or len(host) > 253:
        raise ProxyRefusal(400, f"bad host {text!r}")
    return host


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ProxyRefusal(400, f"bad port {text!r}")
    return int(text)


async def _connect(address: IPAddress, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await asyncio.open_connection(str(address), port)
    except TimeoutError:
        raise ProxyRefusal(504, f"{address}:{port} did not answer within {CONNECT_TIMEOUT:g}s") from None
    except OSError as exc:
        raise ProxyRefusal(502, f"cannot connect to {address}:{port}: {exc.strerror or exc}") from None


async def _refuse(channel: Channel, refusal: ProxyRefusal) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 431: "Request Header Fields Too Large",
               502: "Bad Gateway", 504: "Gateway Timeout"}  # fmt: skip
    body = f"warden egress: {refusal.reason}\n".encode()
    head = (
        f"HTTP/1.1 {refusal.status} {reasons.get(refusal.status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "X-Warden-Egress: denied\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(ConnectionError):
        await channel.write(head.encode() + body)
        channel.write_eof()


__all__ = ["EgressDecision", "EgressProxy", "ProxyRefusal", "system_resolver"]
