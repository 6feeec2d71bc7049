"""Egress policy: which hosts and ports a sandbox (or a tool) may reach. Pure decisions, no
sockets: the sandbox egress proxy asks here before it resolves or connects, and governance can
ask the same question of a URL in a tool's arguments."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALWAYS_BLOCKED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT (RFC 6598; Alibaba Cloud's metadata is 100.100.100.200)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata at 169.254.169.254)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking networks"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local (AWS metadata at fd00:ec2::254)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
"""Never reachable, whatever the allow-list says: the host itself, its neighbours, the cloud's
metadata service. Addresses that embed an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by
the address they embed."""

_BLOCKED = tuple((ipaddress.ip_network(net), why) for net, why in ALWAYS_BLOCKED)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DOMAIN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class EgressRuleError(ValueError):
    """An allow-list entry that is neither a CIDR, an address nor a domain pattern."""


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str
    """Why, in words an operator (and the sandboxed program) can act on."""
    rule: str = ""
    """The allow-list entry or blocked range that decided."""


def parse_entry(entry: str) -> IPNetwork | str:
    """An allow-list entry: a network (``203.0.113.0/24``, ``2001:db8::1``) or a lower-case domain
    pattern (``pypi.org``, ``*.example.com``)."""
    text = entry.strip().lower().rstrip(".")
    if not text:
        raise EgressRuleError("an empty egress allow-list entry")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    if "/" in text or ":" in text or not _DOMAIN.match(text) or len(text) > 253:
        raise EgressRuleError(
            f"{entry!r} is not a CIDR (203.0.113.0/24), an address or a domain (example.com, *.example.com)"
        )
    if text.replace(".", "").isdigit():
        raise EgressRuleError(
            f"{entry!r} looks like an incomplete IPv4 address; write it in full or as a CIDR"
        )
    return text


def blocked_range(address: IPAddress) -> tuple[IPNetwork, str] | None:
    """The always-blocked range ``address`` falls in, judging embedded IPv4 addresses too."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            candidates.append(address.sixtofour)
        if address in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    for candidate in candidates:
        for network, why in _BLOCKED:
            if candidate.version == network.version and candidate in network:
                return network, why
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """An allow-list: networks, domain patterns and ports. Everything else is denied."""

    networks: tuple[IPNetwork, ...] = ()
    domains: tuple[str, ...] = ()
    """Exact names, or ``*.suffix`` for any name below ``suffix`` (not ``suffix`` itself)."""
    ports: frozenset[int] = frozenset({80, 443})
    hosts: Mapping[str, tuple[IPAddress, ...]] = field(default_factory=dict)
    """Names pinned to addresses, resolved without DNS (like /etc/hosts)."""

    @classmethod
    def from_config(
        cls,
        allow: Iterable[str],
        ports: Iterable[int] = (80, 443),
        hosts: Mapping[str, Iterable[str]] | None = None,
    ) -> EgressPolicy:
        networks: list[IPNetwork] = []
        domains: list[str] = []
        for entry in allow:
            parsed = parse_entry(entry)
            if isinstance(parsed, str):
                domains.append(parsed)
            else:
                networks.append(parsed)
        pinned: dict[str, tuple[IPAddress, ...]] = {}
        for name, addresses in (hosts or {}).items():
            key = parse_entry(name)
            if not isinstance(key, str) or key.startswith("*."):
                raise EgressRuleError(f"hosts: {name!r} is not a domain name")
            try:
                pinned[key] = tuple(ipaddress.ip_address(a) for a in addresses)
            except ValueError as exc:
                raise EgressRuleError(f"hosts: {name}: {exc}") from None
        return cls(tuple(networks), tuple(domains), frozenset(ports), pinned)

    def check_port(self, port: int) -> Verdict | None:
        """A denial when ``port`` is not allowed, else None."""
        if port not in self.ports:
            allowed = ", ".join(str(p) for p in sorted(self.ports)) or "none"
            return Verdict(False, f"port {port} is not allowed (allowed ports: {allowed})", "ports")
        return None

    def check_name(self, host: str) -> Verdict:
        """May ``host`` (a name, not an address) be resolved? Asked *before* any DNS lookup, so
        a denied name never leaves the machine (no exfiltration through the resolver)."""
        name = host.strip().lower().rstrip(".")
        for pattern in self.domains:
            if pattern.startswith("*."):
                if name.endswith(pattern[1:]) and len(name) > len(pattern) - 1:
                    return Verdict(True, f"{name} matches {pattern}", pattern)
            elif name == pattern:
                return Verdict(True, f"{name} is allowed", pattern)
        return Verdict(False, f"{name} is not in the egress allow-list", "default-deny")

    def check_address(self, address: IPAddress, *, via_name: str | None = None) -> Verdict:
        """May this address be connected to? Blocked ranges first, whatever allowed it; an
        address reached through an allowed name needs no network rule of its own."""
        blocked = blocked_range(address)
        if blocked is not None:
            network, why = blocked
            return Verdict(False, f"{address} is in {network}: {why}, always blocked", str(network))
        if via_name is not None:
            return Verdict(True, f"{address} is an address of the allowed name {via_name}", via_name)
        for network in self.networks:
            if address.version == network.version and address in network:
                return Verdict(True, f"{address} is in {network}", str(network))
        return Verdict(False, f"{address} is not in the egress allow-list", "default-deny")


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an address when it is one in canonical notation (brackets allowed)."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


__all__ = [
    "ALWAYS_BLOCKED",
    "EgressPolicy",
    "EgressRuleError",
    "Verdict",
    "blocked_range",
    "literal_address",
    "parse_entry",
]
