"""Protocol eras: the 2025-11-25 ``initialize`` handshake (legacy) and the 2026-07-28 stateless
protocol (modern). Which one a server speaks is negotiated once and remembered."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import mcp_types as types
from mcp_types.version import MODERN_PROTOCOL_VERSIONS


class Era(StrEnum):
    LEGACY = "legacy"
    MODERN = "modern"


def era_of(protocol_version: str | None) -> Era:
    return Era.MODERN if protocol_version in MODERN_PROTOCOL_VERSIONS else Era.LEGACY


@dataclass
class EraVerdict:
    """What negotiation found for one server: its era and, for modern servers, the discover
    result, so the next connection adopts it without probing again."""

    era: Era
    protocol_version: str | None = None
    discover: types.DiscoverResult | None = None


@dataclass
class EraCache:
    """The verdicts of servers configured ``era: auto``, per server name (process-wide; the
    database keeps the era across restarts)."""

    verdicts: dict[str, EraVerdict] = field(default_factory=dict)

    def get(self, server: str) -> EraVerdict | None:
        return self.verdicts.get(server)

    def remember(self, server: str, verdict: EraVerdict) -> None:
        self.verdicts[server] = verdict

    def forget(self, server: str) -> None:
        self.verdicts.pop(server, None)


def client_mode(setting: str, verdict: EraVerdict | None) -> str:
    """The ``mcp.Client(mode=…)`` for a server's ``era`` setting and cached verdict.

    A cached legacy verdict skips the ``server/discover`` probe, which some strict legacy stdio
    servers answer by exiting; a cached modern verdict with its discover result adopts it.
    """
    if setting == "legacy":
        return "legacy"
    if verdict is not None and verdict.era is Era.LEGACY:
        return "legacy"
    if (
        verdict is not None
        and verdict.discover is not None
        and verdict.protocol_version in MODERN_PROTOCOL_VERSIONS
    ):
        return verdict.protocol_version
    return "auto"
