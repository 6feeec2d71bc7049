"""The audit log contract, on SQLite and PostgreSQL: a per-tenant hash chain that is gap-free
under concurrent appends, commits with its caller's transaction, and whose verification finds
the first entry that was edited, removed or moved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from warden.governance.audit import GENESIS_HASH, AuditEntry, AuditLog, ChainHead, canonical_json
from warden.store import Database, upgrade
from warden.store.schema import audit_heads, audit_log

HMAC_KEY = b"a test key that is long enough"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return AuditLog(db)


def decision(tenant: str = "tnt_a", n: int = 0, **overrides: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "tenant_id": tenant,
        "actor": "agent:tester",
        "action": "tool.decision",
        "subject": f"task_{n}",
        "outcome": "allow",
        "rule": "default",
        "reason": f"call {n} is allowed",
        "data": {"tool": "calculator", "arguments": {"expression": f"{n}+1"}, "who": "<PERSON_1>"},
    }
    fields.update(overrides)
    return AuditEntry(**fields)


async def append_many(audit: AuditLog, n: int, tenant: str = "tnt_a") -> None:
    for i in range(n):
        await audit.record(decision(tenant, i))


async def tamper(db: Database, tenant: str, at: int, **values: Any) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            update(audit_log).where(audit_log.c.tenant_id == tenant, audit_log.c.seq == at).values(**values)
        )


async def test_appended_entries_form_a_chain_that_verifies(audit: AuditLog) -> None:
    await append_many(audit, 3)
    records = await audit.list("tnt_a")
    assert [r.seq for r in records] == [3, 2, 1]
    first, second, third = reversed(records)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert third.data["who"] == "<PERSON_1>"
    assert first.ts <= second.ts <= third.ts
    result = await audit.verify("tnt_a")
    assert (result.ok, result.entries, result.first_bad_seq, result.problem) == (True, 3, None, None)
    assert await audit.head("tnt_a") == ChainHead(3, third.hash)


async def test_an_empty_chain_verifies(audit: AuditLog) -> None:
    result = await audit.verify("tnt_nobody")
    assert result.ok and result.entries == 0


@pytest.mark.parametrize(
    "edit",
    [
        {"reason": "call 2 was denied"},
        {"outcome": "deny"},
        {"data": canonical_json({"tool": "rm", "arguments": {}, "who": "<PERSON_1>"})},
        {"actor": "system"},
        {"ts": 0.0},
    ],
    ids=["reason", "verdict", "data", "actor", "time"],
)
async def test_an_edited_entry_is_found_at_its_seq(
    audit: AuditLog, db: Database, edit: dict[str, Any]
) -> None:
    await append_many(audit, 4)
    await tamper(db, "tnt_a", 3, **edit)
    result = await audit.verify("tnt_a")
    assert not result.ok
    assert result.first_bad_seq == 3
    assert result.entries == 2
    assert "does not match its hash" in (result.problem or "")


async def test_a_deleted_middle_entry_is_found(audit: AuditLog, db: Database) -> None:
    await append_many(audit, 5)
    async with db.transaction() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.tenant_id == "tnt_a", audit_log.c.seq == 3))
    result = await audit.verify("tnt_a")
    assert not result.ok and result.first_bad_seq == 3
    assert "entry 3 is missing" in (result.problem or "")


async def test_deleted_newest_entries_are_found_through_the_chain_head(audit: AuditLog, db: Database) -> None:
    await append_many(audit, 5)
    async with db.transaction() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.tenant_id == "tnt_a", audit_log.c.seq >= 4))
    result = await audit.verify("tnt_a")
    assert not result.ok and result.first_bad_seq == 4 and result.entries == 3
    assert "4–5 are missing" in (result.problem or "")


async def test_a_cut_tail_with_a_rewound_head_is_found_only_by_an_anchor(
    audit: AuditLog, db: Database
) -> None:
    await append_many(audit, 5)
    anchor = await audit.head("tnt_a")
    assert anchor is not None
    async with db.transaction() as conn:
        third = (
            await conn.execute(
                select(audit_log.c.hash).where(audit_log.c.tenant_id == "tnt_a", audit_log.c.seq == 3)
            )
        ).scalar_one()
        await conn.execute(delete(audit_log).where(audit_log.c.tenant_id == "tnt_a", audit_log.c.seq >= 4))
        await conn.execute(
            update(audit_heads).where(audit_heads.c.tenant_id == "tnt_a").values(seq=3, hash=third)
        )
    assert (await audit.verify("tnt_a")).ok  # what docs/security.md says verification cannot see
    result = await audit.verify("tnt_a", anchor=anchor)
    assert not result.ok and result.first_bad_seq == 4


async def test_swapped_entries_are_found(audit: AuditLog, db: Database) -> None:
    await append_many(audit, 4)
    await tamper(db, "tnt_a", 2, seq=-2)
    await tamper(db, "tnt_a", 3, seq=2)
    await tamper(db, "tnt_a", -2, seq=3)
    result = await audit.verify("tnt_a")
    assert not result.ok and result.first_bad_seq == 2


async def test_a_recomputed_chain_is_found_when_an_hmac_key_seals_it(db: Database) -> None:
    sealed = AuditLog(db, hmac_key=HMAC_KEY)
    for i in range(3):
        await sealed.record(decision("tnt_a", i))
    # Someone with write access edits entry 2 and recomputes every hash without the key.
    forger = AuditLog(db)
    async with db.transaction() as conn:
        rows = (
            await conn.execute(
                select(audit_log).where(audit_log.c.tenant_id == "tnt_a").order_by(audit_log.c.seq)
            )
        ).all()
        prev = GENESIS_HASH
        for row in rows:
            values = {name: getattr(row, name) for name in ("tenant_id", "seq", "ts", "actor", "action")}
            values |= {name: getattr(row, name) for name in ("subject", "outcome", "rule", "reason", "data")}
            if row.seq == 2:
                values["outcome"] = "deny"
            values["prev_hash"] = prev
            prev = forger._seal(values)
            await conn.execute(
                update(audit_log)
                .where(audit_log.c.tenant_id == "tnt_a", audit_log.c.seq == row.seq)
                .values(**values, hash=prev, key_id="")
            )
        await conn.execute(update(audit_heads).where(audit_heads.c.tenant_id == "tnt_a").values(hash=prev))
    assert (await forger.verify("tnt_a")).ok  # a plain SHA-256 chain can be recomputed …
    result = await sealed.verify("tnt_a")  # … an HMAC-sealed one cannot
    assert not result.ok and result.first_bad_seq == 1
    assert "sealed with no HMAC key" in (result.problem or "")


async def test_fifty_concurrent_appends_make_a_gap_free_valid_chain(audit: AuditLog, db: Database) -> None:
    async def one(i: int) -> int:
        async with db.transaction() as conn:
            return (await audit.append(conn, decision("tnt_a", i))).seq

    seqs = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    result = await audit.verify("tnt_a")
    assert result.ok and result.entries == 50


async def test_tenants_have_independent_chains(audit: AuditLog) -> None:
    await asyncio.gather(append_many(audit, 3, "tnt_a"), append_many(audit, 2, "tnt_b"))
    a, b = await audit.list("tnt_a"), await audit.list("tnt_b")
    assert [r.seq for r in a] == [3, 2, 1] and [r.seq for r in b] == [2, 1]
    assert {r.tenant_id for r in a} == {"tnt_a"} and {r.tenant_id for r in b} == {"tnt_b"}
    assert b[-1].prev_hash == GENESIS_HASH
    assert (await audit.verify("tnt_a")).entries == 3
    assert (await audit.verify("tnt_b")).entries == 2


class _Abort(Exception):
    pass


async def test_an_append_in_a_rolled_back_transaction_leaves_no_entry_and_no_gap(
    audit: AuditLog, db: Database
) -> None:
    await append_many(audit, 2)
    with pytest.raises(_Abort):
        async with db.transaction() as conn:
            await audit.append(conn, decision("tnt_a", 99))
            raise _Abort
    assert [r.seq for r in await audit.list("tnt_a")] == [2, 1]
    after = await audit.record(decision("tnt_a", 3))
    assert after.seq == 3
    assert (await audit.verify("tnt_a")).ok


async def test_list_filters_and_pages_newest_first(audit: AuditLog) -> None:
    await append_many(audit, 4)
    await audit.record(decision("tnt_a", 9, action="approval.decided", actor="key:key_1", outcome="approved"))
    approvals = await audit.list("tnt_a", action="approval.decided")
    assert [(r.seq, r.outcome) for r in approvals] == [(5, "approved")]
    assert [r.seq for r in await audit.list("tnt_a", subject="task_1")] == [2]
    first_page = await audit.list("tnt_a", limit=2)
    second_page = await audit.list("tnt_a", limit=2, before_seq=first_page[-1].seq)
    assert [r.seq for r in first_page + second_page] == [5, 4, 3, 2]
    everything = await audit.list("tnt_a")
    assert await audit.list("tnt_a", since=everything[0].ts + 1) == []
    assert len(await audit.list("tnt_a", until=everything[0].ts + 1)) == 5


async def test_data_that_is_not_plain_json_is_refused(audit: AuditLog) -> None:
    from warden.errors import InvalidInput

    with pytest.raises(InvalidInput):
        await audit.record(decision(data={"x": float("nan")}))
    with pytest.raises(InvalidInput):
        await audit.record(decision(data={"x": object()}))
    assert await audit.list("tnt_a") == []


async def test_a_batch_appended_in_one_transaction_chains_in_order(audit: AuditLog, db: Database) -> None:
    await append_many(audit, 2)
    async with db.transaction() as conn:
        records = await audit.append_many(conn, [decision("tnt_a", n) for n in (10, 11, 12)])
    assert [r.seq for r in records] == [3, 4, 5]
    assert records[1].prev_hash == records[0].hash and records[2].prev_hash == records[1].hash
    stored = list(reversed(await audit.list("tnt_a")))
    assert [r.hash for r in stored[2:]] == [r.hash for r in records]
    assert (await audit.verify("tnt_a")).ok
    assert await audit.head("tnt_a") == ChainHead(5, records[-1].hash)
    async with db.transaction() as conn:
        assert await audit.append_many(conn, []) == []
        with pytest.raises(ValueError, match="one tenant"):
            await audit.append_many(conn, [decision("tnt_a"), decision("tnt_b")])


async def test_append_later_chains_like_append_many_and_rolls_back_with_its_transaction(
    audit: AuditLog, db: Database
) -> None:
    """On SQLite the whole append runs in the writer thread at the transaction's next unit; the
    chain it leaves is the one ``append_many`` would have left, and a failure after it in the
    same transaction leaves no entry."""
    async with db.transaction() as conn:
        await audit.append_later(conn, [decision("tnt_new", n) for n in (1, 2)])  # creates the head
    async with db.transaction() as conn:
        await audit.append_later(conn, [decision("tnt_new", 3)])
        await audit.append_later(conn, [])
    stored = list(reversed(await audit.list("tnt_new")))
    assert [r.seq for r in stored] == [1, 2, 3]
    assert [r.subject for r in stored] == ["task_1", "task_2", "task_3"]
    assert (await audit.verify("tnt_new")).ok
    assert await audit.head("tnt_new") == ChainHead(3, stored[-1].hash)

    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await audit.append_later(conn, [decision("tnt_new", 4)])
            await conn.execute(select(audit_heads.c.seq))  # the deferred append runs here
            raise RuntimeError("the decision's transaction fails")
    assert [r.seq for r in await audit.list("tnt_new")] == [3, 2, 1]
    async with db.transaction() as conn:
        await audit.append_later(conn, [decision("tnt_new", 5)])
    assert (await audit.verify("tnt_new")).ok
    newest = (await audit.list("tnt_new"))[0]
    assert (newest.seq, newest.subject) == (4, "task_5")
    assert await audit.head("tnt_new") == ChainHead(4, newest.hash)
    with pytest.raises(ValueError, match="one tenant"):
        async with db.transaction() as conn:
            await audit.append_later(conn, [decision("tnt_a"), decision("tnt_b")])


async def test_stored_entries_are_byte_for_byte_what_was_hashed(audit: AuditLog, db: Database) -> None:
    """Non-ASCII text, control characters, quotes and awkward floats survive the trip into the
    database exactly (PostgreSQL stores a batch through a JSON array), so the chain verifies."""
    entries = [
        decision(
            reason='naïve "quoted" \\ back\\slash\nnewline \u2028 ✓ 日本', data={"x": 0.1 + 0.2, "e": 1e-7}
        ),
        decision(subject=None, outcome=None, rule=None, reason=None, data={"emoji": "🙂", "tab": "\t"}),
    ]
    async with db.transaction() as conn:
        records = await audit.append_many(conn, entries)
    async with db.read() as conn:
        rows = (
            await conn.execute(
                select(audit_log).where(audit_log.c.tenant_id == "tnt_a").order_by(audit_log.c.seq)
            )
        ).all()
    assert [(r.reason, r.subject, r.ts, r.hash) for r in rows] == [
        (rec.reason, rec.subject, rec.ts, rec.hash) for rec in records
    ]
    assert [r.data for r in rows] == [canonical_json(e.data) for e in entries]
    assert (await audit.verify("tnt_a")).ok
