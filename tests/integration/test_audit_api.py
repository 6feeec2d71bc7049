"""The audit log over HTTP and from the CLI: tenant-scoped listing, the ``audit:read`` scope,
and verification that reports tampering (the CLI exits 1 with one red line)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.conftest import MakeConfig
from warden.governance.audit import AuditEntry, AuditLog
from warden.store.schema import audit_log
from warden.testing.harness import WardenHarness


@pytest.fixture
async def harness(make_config: MakeConfig) -> AsyncIterator[WardenHarness]:
    async with WardenHarness(make_config(), workers=0) as h:
        yield h


async def tenant_of(h: WardenHarness, key: str) -> str:
    assert h.runtime is not None
    return (await h.runtime.keys.authenticate(key)).tenant_id


async def record(h: WardenHarness, tenant_id: str, n: int, action: str = "tool.decision") -> None:
    assert h.runtime is not None
    audit = AuditLog(h.runtime.db)
    for i in range(n):
        await audit.record(
            AuditEntry(
                tenant_id=tenant_id,
                actor="agent:tester",
                action=action,
                subject=f"task_{i}",
                outcome="deny" if i % 2 else "allow",
                rule="no-shell",
                reason=f"decision {i}",
                data={"tool": "shell", "arguments": {"cmd": "<PATH_1>"}},
            )
        )


async def edit_reason(h: WardenHarness, tenant_id: str, seq: int) -> None:
    assert h.runtime is not None
    async with h.runtime.db.transaction() as conn:
        await conn.execute(
            update(audit_log)
            .where(audit_log.c.tenant_id == tenant_id, audit_log.c.seq == seq)
            .values(reason="nothing to see")
        )


async def test_list_shows_only_the_callers_tenant_newest_first(harness: WardenHarness) -> None:
    mine = await harness.key_for("acme", ["audit:read"])
    theirs = await harness.key_for("globex", ["admin"])
    await record(harness, await tenant_of(harness, mine), 3)
    await record(harness, await tenant_of(harness, theirs), 2, action="model.call")
    async with harness.client(mine) as client:
        page = (await client.get("/v1/audit")).json()
        assert [e["seq"] for e in page["items"]] == [3, 2, 1]
        assert {e["action"] for e in page["items"]} == {"tool.decision"}
        assert page["items"][0]["data"] == {"tool": "shell", "arguments": {"cmd": "<PATH_1>"}}
        assert page["items"][0]["time"].endswith("+00:00")
        assert (await client.get("/v1/audit", params={"action": "model.call"})).json()["items"] == []
    async with harness.client(theirs) as client:
        page = (await client.get("/v1/audit")).json()
        assert [(e["seq"], e["action"]) for e in page["items"]] == [(2, "model.call"), (1, "model.call")]


async def test_list_filters_and_pages_with_a_cursor(harness: WardenHarness) -> None:
    key = await harness.key_for("acme", ["audit:read"])
    await record(harness, await tenant_of(harness, key), 5)
    async with harness.client(key) as client:
        first = (await client.get("/v1/audit", params={"limit": 2})).json()
        second = (await client.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert [e["seq"] for e in first["items"] + second["items"]] == [5, 4, 3, 2]
        assert [
            e["seq"] for e in (await client.get("/v1/audit", params={"subject": "task_1"})).json()["items"]
        ] == [2]
        assert (await client.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"})).json()["items"] == []
        assert (
            len((await client.get("/v1/audit", params={"until": "2999-01-01T00:00:00"})).json()["items"]) == 5
        )
        bad = await client.get("/v1/audit", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"


async def test_a_key_without_audit_read_is_refused(harness: WardenHarness) -> None:
    key = await harness.key_for("acme", ["tasks:read", "tasks:write"])
    async with harness.client(key) as client:
        for path in ("/v1/audit", "/v1/audit/verify"):
            response = await client.get(path)
            assert response.status_code == 403
            assert response.json()["code"] == "missing_scope"


async def test_verify_reports_ok_then_the_first_edited_entry(harness: WardenHarness) -> None:
    key = await harness.key_for("acme", ["audit:read"])
    tenant_id = await tenant_of(harness, key)
    await record(harness, tenant_id, 4)
    async with harness.client(key) as client:
        assert (await client.get("/v1/audit/verify")).json() == {
            "ok": True,
            "entries": 4,
            "first_bad_seq": None,
            "problem": None,
        }
        await edit_reason(harness, tenant_id, 2)
        body = (await client.get("/v1/audit/verify")).json()
        assert body["ok"] is False and body["first_bad_seq"] == 2 and body["entries"] == 1
        assert "entry 2" in body["problem"]
    other = await harness.key_for("globex", ["audit:read"])
    async with harness.client(other) as client:  # another tenant's chain is untouched
        assert (await client.get("/v1/audit/verify")).json()["ok"] is True


async def warden_cli(tmp: Path, url: str, key: str, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WARDEN_", "OPENAI_", "ANTHROPIC_"))}
    env.update(PYTHONUNBUFFERED="1", CI="true", COLUMNS="200", WARDEN_URL=url, WARDEN_API_KEY=key)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "warden",
        "audit",
        *args,
        cwd=tmp,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_lists_verifies_and_exits_1_on_tampering(harness: WardenHarness, tmp_path: Path) -> None:
    key = await harness.key_for("acme", ["audit:read"])
    tenant_id = await tenant_of(harness, key)
    await record(harness, tenant_id, 3)

    code, out = await warden_cli(tmp_path, harness.url, key, "list")
    assert code == 0, out
    assert "tool.decision" in out and "no-shell" in out and "task_2" in out

    code, out = await warden_cli(tmp_path, harness.url, key, "verify")
    assert code == 0, out
    assert "intact" in out and "3 entries" in out

    await edit_reason(harness, tenant_id, 3)
    code, out = await warden_cli(tmp_path, harness.url, key, "verify")
    assert code == 1
    assert "verification failed at entry 3" in out
    assert "Traceback" not in out

    no_scope = await harness.key_for("acme", ["tasks:read"])
    code, out = await warden_cli(tmp_path, harness.url, no_scope, "verify")
    assert code == 1
    assert "audit:read" in out and "Traceback" not in out
