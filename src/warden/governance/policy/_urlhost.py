"""The host of a URL in a tool's arguments, read strictly, and whether an allow-list of domain
patterns covers it (netpolicy's patterns and its always-blocked ranges)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from warden.netpolicy import EgressPolicy, blocked_range, literal_address

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_BLOCKED_NAMES = ("localhost", "metadata.google.internal", "metadata")
"""Names that always mean this machine or the cloud's metadata service, whatever the list says."""

MAX_URL_CHARS = 8192


class UrlError(ValueError):
    """The value is not a URL whose host can be judged; the caller fails closed."""


def url_host(url: str) -> str:
    """The lower-case host of an absolute URL (an address in brackets is unbracketed), or
    `UrlError` when parsers could disagree on it: backslashes, whitespace, control characters,
    percent-encoding or non-ASCII in the host, numeric hosts that are not dotted quads
    (``0x7f.1``, ``2130706433``), no scheme or no host."""
    if len(url) > MAX_URL_CHARS:
        raise UrlError(f"longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c == "\\" for c in url):
        raise UrlError("contains whitespace, control characters, backslashes or non-ASCII characters")
    if not _SCHEME.match(url):
        raise UrlError("has no scheme (expected an absolute URL such as https://host/path)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise UrlError(f"cannot be parsed ({exc})") from None
    host = parts.hostname
    if not host:
        raise UrlError("has no host")
    if "%" in host:
        raise UrlError("has a percent-encoded host or an IPv6 zone")
    address = literal_address(host)
    if address is not None:
        return str(address)
    name = host.rstrip(".")
    if not _NAME.match(name):
        raise UrlError(f"has a host that is not a domain name or an IP address: {host!r}")
    if _NUMERIC_LABEL.match(name.rsplit(".", 1)[-1]):
        raise UrlError(f"has a numeric host that is not a dotted-quad IPv4 address: {host!r}")
    return name


@dataclass(frozen=True)
class HostAllowList:
    """Domain patterns (``api.example.com``, ``*.example.org``) and networks; private, loopback,
    link-local and metadata addresses and ``localhost`` are never inside."""

    policy: EgressPolicy

    @classmethod
    def from_patterns(cls, patterns: Sequence[str]) -> HostAllowList:
        """Raises `warden.netpolicy.EgressRuleError` on an entry that is not a pattern."""
        return cls(EgressPolicy.from_config(patterns, ports=()))

    def contains(self, host: str) -> tuple[bool, str]:
        """Whether ``host`` (from `url_host`) is inside, and why."""
        address = literal_address(host)
        if address is not None:
            blocked = blocked_range(address)
            if blocked is not None:
                network, why = blocked
                return False, f"{address} is in {network} ({why}), always outside"
            verdict = self.policy.check_address(address)
            return verdict.allowed, verdict.reason
        if any(host == name or host.endswith("." + name) for name in _BLOCKED_NAMES):
            return False, f"{host} names this machine or a metadata service, always outside"
        verdict = self.policy.check_name(host)
        return verdict.allowed, verdict.reason
