"""Tool pinning: a SHA-256 over each tool's canonical definition, approved by an admin and kept
in the database; a definition that no longer matches its pin (a rug pull) disables the tool."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import select

from warden.store import schema
from warden.store.database import Database, wall_clock
from warden.tools.mcp.poisoning import Flag

PINNED_FIELDS = ("name", "description", "inputSchema", "annotations")
"""What a pin covers: everything the model reads or that changes how Warden treats the tool."""


class ToolStatus(StrEnum):
    APPROVED = "approved"
    """The listed definition matches the pin: the tool runs."""
    PENDING = "pending"
    """Never approved; no flags."""
    FLAGGED = "flagged"
    """Never approved and a poisoning rule fired: an admin must look before it runs."""
    CHANGED = "changed"
    """The definition no longer matches its pin (a rug pull?): disabled until re-approved."""


def canonical_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """The pinned part of a wire-shaped tool definition; absent fields are left out."""
    return {k: definition[k] for k in PINNED_FIELDS if definition.get(k) is not None}


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 text: one byte string per definition."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def definition_sha256(definition: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(canonical_definition(definition)).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """What Warden knows of one MCP tool: its last listed definition, flags and pin."""

    server: str
    name: str
    definition: dict[str, Any]
    sha256: str
    flags: tuple[Flag, ...] = ()
    approved_definition: dict[str, Any] | None = None
    approved_sha256: str | None = None
    approved_by: str | None = None
    approved_at: float | None = None
    first_seen_at: float = 0.0
    last_seen_at: float = 0.0

    @property
    def status(self) -> ToolStatus:
        if self.approved_sha256 is not None:
            return ToolStatus.APPROVED if self.approved_sha256 == self.sha256 else ToolStatus.CHANGED
        return ToolStatus.FLAGGED if self.flags else ToolStatus.PENDING

    @property
    def enabled(self) -> bool:
        return self.status is ToolStatus.APPROVED

    @property
    def qualified_name(self) -> str:
        return f"{self.server}.{self.name}"


@dataclass
class Sighting:
    """One tool as a server lists it now, with the flags the poisoning rules raised."""

    definition: dict[str, Any]
    flags: tuple[Flag, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    @property
    def sha256(self) -> str:
        return definition_sha256(self.definition)


def _record(row: Any) -> ToolRecord:
    return ToolRecord(
        server=row.server,
        name=row.name,
        definition=dict(row.definition),
        sha256=row.sha256,
        flags=tuple(Flag.from_dict(f) for f in row.flags or ()),
        approved_definition=dict(row.approved_definition) if row.approved_definition is not None else None,
        approved_sha256=row.approved_sha256,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        first_seen_at=row.first_seen_at,
        last_seen_at=row.last_seen_at,
    )


class PinStore:
    """The pins and sightings of MCP tools, and the era verdicts of servers, in the database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def tools(self, server: str | None = None) -> list[ToolRecord]:
        query = select(schema.mcp_tools).order_by(schema.mcp_tools.c.server, schema.mcp_tools.c.name)
        if server is not None:
            query = query.where(schema.mcp_tools.c.server == server)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def tool(self, server: str, name: str) -> ToolRecord | None:
        t = schema.mcp_tools.c
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(schema.mcp_tools).where(t.server == server, t.name == name))
            ).first()
        return _record(row) if row is not None else None

    async def record_sightings(
        self, server: str, sightings: Iterable[Sighting], *, auto_approve: bool = False
    ) -> list[ToolRecord]:
        """Store what the server lists now. With ``auto_approve`` (trust on first use), a tool
        seen for the first time without flags is pinned at once; nothing else is approved here."""
        t = schema.mcp_tools.c
        now = wall_clock()
        async with self.db.transaction() as conn:
            existing = {
                row.name: row
                for row in (await conn.execute(select(schema.mcp_tools).where(t.server == server))).all()
            }
            for sighting in sightings:
                values: dict[str, Any] = {
                    "definition": sighting.definition,
                    "sha256": sighting.sha256,
                    "flags": [f.to_dict() for f in sighting.flags],
                    "last_seen_at": now,
                }
                row = existing.get(sighting.name)
                if row is None:
                    if auto_approve and not sighting.flags:
                        values |= {
                            "approved_definition": sighting.definition,
                            "approved_sha256": sighting.sha256,
                            "approved_by": "auto (trust on first use)",
                            "approved_at": now,
                        }
                    await conn.execute(
                        schema.mcp_tools.insert().values(
                            server=server, name=sighting.name, first_seen_at=now, **values
                        )
                    )
                elif row.sha256 != sighting.sha256 or row.last_seen_at < now:
                    await conn.execute(
                        schema.mcp_tools.update()
                        .where(t.server == server, t.name == sighting.name)
                        .values(**values)
                    )
        return await self.tools(server)

    async def approve(self, server: str, names: Iterable[str] | None, *, by: str) -> list[ToolRecord]:
        """Pin the last listed definition of ``names`` (every tool of the server when None)."""
        t = schema.mcp_tools.c
        now = wall_clock()
        wanted = None if names is None else set(names)
        approved: list[str] = []
        async with self.db.transaction() as conn:
            rows = (await conn.execute(select(schema.mcp_tools).where(t.server == server))).all()
            for row in rows:
                if wanted is not None and row.name not in wanted:
                    continue
                await conn.execute(
                    schema.mcp_tools.update()
                    .where(t.server == server, t.name == row.name)
                    .values(
                        approved_definition=row.definition,
                        approved_sha256=row.sha256,
                        approved_by=by[:200],
                        approved_at=now,
                    )
                )
                approved.append(str(row.name))
        records = {r.name: r for r in await self.tools(server)}
        return [records[name] for name in approved if name in records]

    async def era(self, server: str) -> str | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(schema.mcp_servers.c.era).where(schema.mcp_servers.c.name == server)
                )
            ).first()
        return None if row is None else row.era

    async def remember_era(self, server: str, era: str) -> None:
        s = schema.mcp_servers.c
        now = wall_clock()
        async with self.db.transaction() as conn:
            updated = await conn.execute(
                schema.mcp_servers.update().where(s.name == server).values(era=era, updated_at=now)
            )
            if updated.rowcount == 0:
                await conn.execute(schema.mcp_servers.insert().values(name=server, era=era, updated_at=now))


class Pins(Protocol):
    """Where pins live: the database (`PinStore`) or, for one-off clients, memory."""

    async def tools(self, server: str | None = None) -> list[ToolRecord]: ...
    async def tool(self, server: str, name: str) -> ToolRecord | None: ...
    async def record_sightings(
        self, server: str, sightings: Iterable[Sighting], *, auto_approve: bool = False
    ) -> list[ToolRecord]: ...
    async def approve(self, server: str, names: Iterable[str] | None, *, by: str) -> list[ToolRecord]: ...
    async def era(self, server: str) -> str | None: ...
    async def remember_era(self, server: str, era: str) -> None: ...


class MemoryPins:
    """Pins kept for the life of the process (tests, the conformance client, `--no-db` tools)."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], ToolRecord] = {}
        self._eras: dict[str, str] = {}

    async def tools(self, server: str | None = None) -> list[ToolRecord]:
        return [r for key, r in sorted(self._records.items()) if server is None or key[0] == server]

    async def tool(self, server: str, name: str) -> ToolRecord | None:
        return self._records.get((server, name))

    async def record_sightings(
        self, server: str, sightings: Iterable[Sighting], *, auto_approve: bool = False
    ) -> list[ToolRecord]:
        now = wall_clock()
        for sighting in sightings:
            key = (server, sighting.name)
            old = self._records.get(key)
            record = old or ToolRecord(server, sighting.name, {}, "", first_seen_at=now)
            record = replace(
                record,
                definition=sighting.definition,
                sha256=sighting.sha256,
                flags=sighting.flags,
                last_seen_at=now,
            )
            if old is None and auto_approve and not sighting.flags:
                record = replace(
                    record,
                    approved_definition=sighting.definition,
                    approved_sha256=sighting.sha256,
                    approved_by="auto (trust on first use)",
                    approved_at=now,
                )
            self._records[key] = record
        return await self.tools(server)

    async def approve(self, server: str, names: Iterable[str] | None, *, by: str) -> list[ToolRecord]:
        wanted = None if names is None else set(names)
        now = wall_clock()
        approved = []
        for key, record in list(self._records.items()):
            if key[0] == server and (wanted is None or key[1] in wanted):
                record = replace(
                    record,
                    approved_definition=record.definition,
                    approved_sha256=record.sha256,
                    approved_by=by,
                    approved_at=now,
                )
                self._records[key] = record
                approved.append(record)
        return approved

    async def era(self, server: str) -> str | None:
        return self._eras.get(server)

    async def remember_era(self, server: str, era: str) -> None:
        self._eras[server] = era
