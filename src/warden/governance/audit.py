"""The tamper-evident audit log: who did what to which subject, with what outcome and why, kept
as one hash chain per tenant so that editing, deleting or reordering an entry is detectable.

Each entry stores its per-tenant ``seq`` (gap-free), the previous entry's hash and its own
``hash = SHA-256(canonical JSON of its fields + prev_hash)``; with an HMAC key configured
(``WARDEN_AUDIT_HMAC_KEY``) the hash is an HMAC, so write access to the database alone is not
enough to forge a consistent chain. ``audit_heads`` holds each chain's newest seq and hash: an
append locks that row (``SELECT … FOR UPDATE``), which serialises a tenant's appends, and
verification compares the walked chain with it to notice a removed tail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, column, func, insert, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from warden.errors import ConfigError, InvalidInput
from warden.store.database import Database, run_later
from warden.store.prepared import Prepared, per_dialect
from warden.store.schema import audit_heads, audit_log

HMAC_KEY_ENV = "WARDEN_AUDIT_HMAC_KEY"
"""Environment variable holding the HMAC key that seals entries (optional; at least 16 bytes)."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a chain's first entry."""

_PAGE = 500
"""Entries read per query while verifying: memory stays bounded however long the chain."""

_LIMITS = {"actor": 200, "action": 64, "subject": 255, "outcome": 32, "rule": 200}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a caller records. Never put raw PII here: pass the placeholders models see."""

    tenant_id: str
    actor: str
    """Who acted: ``agent:<name>``, ``key:<key_id>``, ``system``."""
    action: str
    """What happened: ``tool.decision``, ``approval.decided``, ``model.call``, ``mcp.approve``…"""
    subject: str | None = None
    """What it happened to: a task id, a tool name, an MCP server…"""
    outcome: str | None = None
    """The verdict or result: ``allow``, ``deny``, ``ask``, ``approved``, ``ok``…"""
    rule: str | None = None
    """The policy rule that decided, if any."""
    reason: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    """Further facts as JSON (placeholders only, never raw PII)."""

    def __post_init__(self) -> None:
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if value is not None and len(value) > limit:
                raise InvalidInput(f"audit entry {name} is longer than {limit} characters")
        if not self.tenant_id or not self.actor or not self.action:
            raise InvalidInput("an audit entry needs a tenant_id, an actor and an action")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry as stored: the caller's fields plus its place in the chain."""

    tenant_id: str
    seq: int
    ts: float
    """Epoch seconds from the database's clock."""
    actor: str
    action: str
    subject: str | None
    outcome: str | None
    rule: str | None
    reason: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str
    key_id: str
    """Fingerprint of the HMAC key that sealed it; empty for plain SHA-256."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    """A chain's newest seq and hash; keep a copy elsewhere to make truncation detectable."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    """Entries checked and found sound (before the first problem, if any)."""
    first_bad_seq: int | None = None
    problem: str | None = None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 as is; NaN and infinities are refused."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"audit data must be plain JSON: {exc}") from exc


def _key_id(key: bytes | None) -> str:
    if key is None:
        return ""
    return hmac.new(key, b"warden-audit-key-id", hashlib.sha256).hexdigest()[:16]


class AuditLog:
    """Appends to and verifies the per-tenant audit chains."""

    def __init__(self, db: Database, *, hmac_key: bytes | None = None) -> None:
        if hmac_key is not None and len(hmac_key) < 16:
            raise ConfigError(f"the audit HMAC key must be at least 16 bytes ({HMAC_KEY_ENV})")
        self.db = db
        self._key = hmac_key
        self.key_id = _key_id(hmac_key)

    @classmethod
    def from_env(cls, db: Database, environ: Mapping[str, str] | None = None) -> AuditLog:
        """An audit log sealed with the key in ``WARDEN_AUDIT_HMAC_KEY``, if set."""
        value = (os.environ if environ is None else environ).get(HMAC_KEY_ENV)
        return cls(db, hmac_key=value.encode() if value else None)

    # -- writing -------------------------------------------------------------------------------

    async def append(self, conn: AsyncConnection, entry: AuditEntry) -> AuditRecord:
        """Add ``entry`` inside the caller's write transaction (``db.transaction()``), so it
        commits or rolls back with the decision it records. It holds the tenant's chain lock until
        that transaction ends: append late in a transaction, and keep the transaction short."""
        (record,) = await self.append_many(conn, [entry])
        return record

    async def append_many(self, conn: AsyncConnection, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Several entries of one tenant, chained in order, with one lock of the chain's head and
        one write of its rows (a turn's model call and decisions); on SQLite in one hand-off."""
        if not entries:
            return []
        return await conn.run_sync(self._appender(entries))

    async def append_later(self, conn: AsyncConnection, entries: Sequence[AuditEntry]) -> None:
        """``append_many`` for a caller that does not read the records back (``run_later``): in
        a SQLite write transaction the append runs with the transaction's next unit of work."""
        if entries:
            await run_later(conn, self._appender(entries))

    def _appender(self, entries: Sequence[AuditEntry]) -> Callable[[Connection], list[AuditRecord]]:
        """The append as work on the synchronous connection: lock (or create) the tenant's head,
        chain the entries onto it, store them and move the head."""
        tenant_id = self._tenant_of(entries)
        statements = _statements(self.db)
        tenant = {"a_tenant": tenant_id}

        def append(conn: Connection) -> list[AuditRecord]:
            head = statements.lock_head.run(conn, tenant)
            if not head:
                statements.create_head.run(conn, tenant)
                head = statements.lock_head.run(conn, tenant)
            seq, prev_hash, now = head[0]
            records, rows = self._chain(tenant_id, int(seq), str(prev_hash), float(now), entries)
            last = records[-1]
            moved = {"a_tenant": tenant_id, "a_seq": last.seq, "a_hash": last.hash, "a_ts": last.ts}
            if conn.dialect.name == "postgresql":
                # One round trip: the head's move as a CTE of the rows' insert.
                stored = statements.store_and_move.run(conn, {**moved, "a_rows": rows})
                if len(stored) != len(rows):
                    raise RuntimeError(f"audit append stored {len(stored)} of {len(rows)} entries")
            else:
                statements.insert.run_many(conn, rows)
                statements.move_head.run(conn, moved)
            return records

        return append

    @staticmethod
    def _tenant_of(entries: Sequence[AuditEntry]) -> str:
        tenant_id = entries[0].tenant_id
        if any(e.tenant_id != tenant_id for e in entries):
            raise ValueError("append_many takes entries of one tenant")
        return tenant_id

    def _chain(
        self, tenant_id: str, seq: int, prev_hash: str, ts: float, entries: Sequence[AuditEntry]
    ) -> tuple[list[AuditRecord], list[dict[str, Any]]]:
        """The records chained onto the head (its seq and hash, the database's now) and the
        rows that store them."""
        rows: list[dict[str, Any]] = []
        records: list[AuditRecord] = []
        for entry in entries:
            seq += 1
            data_text = canonical_json(dict(entry.data))
            values: dict[str, Any] = {
                "tenant_id": tenant_id,
                "seq": seq,
                "ts": ts,
                "actor": entry.actor,
                "action": entry.action,
                "subject": entry.subject,
                "outcome": entry.outcome,
                "rule": entry.rule,
                "reason": entry.reason,
                "data": data_text,
                "prev_hash": prev_hash,
            }
            prev_hash = self._seal(values)
            rows.append({**values, "hash": prev_hash, "key_id": self.key_id})
            records.append(
                AuditRecord(**{**values, "data": json.loads(data_text)}, hash=prev_hash, key_id=self.key_id)
            )
        return records, rows

    async def record(self, entry: AuditEntry) -> AuditRecord:
        """Append ``entry`` in a transaction of its own (when there is no decision to join)."""
        async with self.db.transaction() as conn:
            return await self.append(conn, entry)

    def _seal(self, values: Mapping[str, Any]) -> str:
        """The entry's hash over every stored field but the hash itself (``prev_hash`` included)."""
        message = canonical_json({"v": 1, **values}).encode()
        if self._key is None:
            return hashlib.sha256(message).hexdigest()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    # -- reading -------------------------------------------------------------------------------

    async def head(self, tenant_id: str) -> ChainHead | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.tenant_id == tenant_id)
                )
            ).first()
        return None if row is None else ChainHead(int(row.seq), str(row.hash))

    async def list(
        self,
        tenant_id: str,
        *,
        action: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_seq: int | None = None,
        after_seq: int | None = None,
        limit: int = 50,
    ) -> list[AuditRecord]:
        """Newest first, or oldest first from ``after_seq`` on (exports). ``since`` is inclusive,
        ``until`` exclusive; ``before_seq`` pages on."""
        query = select(audit_log).where(audit_log.c.tenant_id == tenant_id)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if subject is not None:
            query = query.where(audit_log.c.subject == subject)
        if since is not None:
            query = query.where(audit_log.c.ts >= since)
        if until is not None:
            query = query.where(audit_log.c.ts < until)
        if before_seq is not None:
            query = query.where(audit_log.c.seq < before_seq)
        if after_seq is not None:
            query = query.where(audit_log.c.seq > after_seq).order_by(audit_log.c.seq)
        else:
            query = query.order_by(audit_log.c.seq.desc())
        query = query.limit(limit)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    async def verify(self, tenant_id: str, *, anchor: ChainHead | None = None) -> Verification:
        """Walk the tenant's chain from its first entry, a page at a time, and report the first
        entry that is missing, edited, moved or not sealed with this log's key. ``anchor``, a
        head kept outside the database, also proves that no entry up to it was cut off."""
        head = await self.head(tenant_id)
        expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
        while True:
            query = (
                select(audit_log)
                .where(audit_log.c.tenant_id == tenant_id, audit_log.c.seq >= expected_seq)
                .order_by(audit_log.c.seq)
                .limit(_PAGE)
            )
            if head is not None:
                # Entries appended after the head was read are for the next verification.
                query = query.where(audit_log.c.seq <= head.seq)
            async with self.db.read() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                problem = self._check(row, expected_seq, prev_hash)
                if problem is not None:
                    return Verification(False, checked, expected_seq, problem)
                if anchor is not None and row.seq == anchor.seq and row.hash != anchor.hash:
                    return Verification(
                        False, checked, expected_seq, f"entry {row.seq} differs from the anchored head"
                    )
                expected_seq, prev_hash, checked = expected_seq + 1, str(row.hash), checked + 1
            if len(rows) < _PAGE:
                break
        return _check_tail(head, anchor, checked, prev_hash)

    def _check(self, row: Any, expected_seq: int, prev_hash: str) -> str | None:
        if row.seq != expected_seq:
            last = f"entry {expected_seq - 1}" if expected_seq > 1 else "the start"
            return f"entry {expected_seq} is missing: the chain jumps from {last} to entry {row.seq}"
        if row.key_id != self.key_id:
            sealed = "no HMAC key" if not row.key_id else "another HMAC key" if self._key else "an HMAC key"
            mine = "this server's HMAC key" if self._key is not None else "no HMAC key"
            return f"entry {row.seq} was sealed with {sealed}, but verification uses {mine}"
        values = {name: getattr(row, name) for name in _SEALED}
        if not hmac.compare_digest(self._seal(values), str(row.hash)):
            return f"entry {row.seq} does not match its hash: it was edited, or moved from another position"
        if row.prev_hash != prev_hash:
            return (
                f"entry {row.seq} does not follow entry {row.seq - 1}: its prev_hash is not that entry's "
                "hash (entries were replaced or re-chained)"
            )
        return None


_SEALED = (
    "tenant_id",
    "seq",
    "ts",
    "actor",
    "action",
    "subject",
    "outcome",
    "rule",
    "reason",
    "data",
    "prev_hash",
)


def _check_tail(
    head: ChainHead | None, anchor: ChainHead | None, checked: int, last_hash: str
) -> Verification:
    if head is None:
        if checked:
            return Verification(
                False, checked, None, "the chain head is missing: the chain cannot be checked"
            )
        head = ChainHead(0, GENESIS_HASH)
    if checked < head.seq:
        return Verification(
            False,
            checked,
            checked + 1,
            f"entries {checked + 1}–{head.seq} are missing: the chain head says the newest is {head.seq}",
        )
    if last_hash != head.hash:
        return Verification(
            False, max(checked - 1, 0), head.seq or None, f"entry {head.seq} does not match the chain head"
        )
    if anchor is not None and anchor.seq > head.seq:
        return Verification(
            False,
            checked,
            head.seq + 1,
            f"entries {head.seq + 1}–{anchor.seq} are missing: the anchored head is {anchor.seq}",
        )
    return Verification(True, checked)


def _record(row: Any) -> AuditRecord:
    return AuditRecord(
        tenant_id=row.tenant_id,
        seq=int(row.seq),
        ts=float(row.ts),
        actor=row.actor,
        action=row.action,
        subject=row.subject,
        outcome=row.outcome,
        rule=row.rule,
        reason=row.reason,
        data=json.loads(row.data),
        prev_hash=row.prev_hash,
        hash=row.hash,
        key_id=row.key_id,
    )


@dataclass(frozen=True, slots=True)
class _Statements:
    """An append's statements, built once per dialect with bind parameters."""

    lock_head: Prepared
    create_head: Prepared
    insert: Prepared
    move_head: Prepared
    store_and_move: Prepared
    """PostgreSQL: ``move_head`` as a CTE of the insert of ``a_rows`` (a JSON array of rows)."""


@per_dialect
def _statements(db: Database) -> _Statements:
    tenant: BindParameter[str] = bindparam("a_tenant", type_=audit_heads.c.tenant_id.type)
    on_conflict_insert = sqlite.insert if db.is_sqlite else postgresql.insert
    move_head = (
        update(audit_heads)
        .where(audit_heads.c.tenant_id == tenant)
        .values(seq=bindparam("a_seq"), hash=bindparam("a_hash"), updated_at=bindparam("a_ts"))
    )
    moved = move_head.returning(audit_heads.c.tenant_id).cte("moved")
    rows = (
        func.jsonb_to_recordset(bindparam("a_rows", type_=postgresql.JSONB))
        .table_valued(*(column(c.name, c.type) for c in audit_log.columns))
        .render_derived(name="r", with_types=True)
    )
    return _Statements(
        # FOR UPDATE serialises a tenant's appends on PostgreSQL; SQLite has one writer
        # anyway (and SQLAlchemy leaves the clause out there).
        lock_head=Prepared(
            select(audit_heads.c.seq, audit_heads.c.hash, db.now().label("now"))
            .where(audit_heads.c.tenant_id == tenant)
            .with_for_update()
        ),
        # Two first appends may race to create the row: the loser waits for the winner's
        # commit and then does nothing; its FOR UPDATE read sees the winner's head.
        create_head=Prepared(
            on_conflict_insert(audit_heads)
            .values(tenant_id=tenant, seq=0, hash=GENESIS_HASH, updated_at=db.now())
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        ),
        insert=Prepared(audit_log.insert(), column_keys=[c.name for c in audit_log.columns]),
        move_head=Prepared(move_head),
        store_and_move=Prepared(
            insert(audit_log)
            .from_select(
                [c.name for c in audit_log.columns],
                select(*(rows.c[c.name] for c in audit_log.columns)).select_from(moved.join(rows, true())),
            )
            .returning(audit_log.c.seq)
        ),
    )
