"""The audit log over HTTP and from the CLI: tenant-scoped listing, the ``audit:read`` scope,
and verification that reports tampering (the CLI exits 1 with one red line)."""

from __future__ import annotations

import asyncio
import itertools
import json
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
        # Entry 1 is the creation of the key itself (an admin action).
        assert [(e["seq"], e["action"]) for e in page["items"]] == [
            (4, "tool.decision"),
            (3, "tool.decision"),
            (2, "tool.decision"),
            (1, "key.created"),
        ]
        assert page["items"][0]["data"] == {"tool": "shell", "arguments": {"cmd": "<PATH_1>"}}
        assert page["items"][0]["time"].endswith("+00:00")
        assert (await client.get("/v1/audit", params={"action": "model.call"})).json()["items"] == []
    async with harness.client(theirs) as client:
        page = (await client.get("/v1/audit")).json()
        assert [(e["seq"], e["action"]) for e in page["items"]] == [
            (3, "model.call"),
            (2, "model.call"),
            (1, "key.created"),
        ]


async def test_list_filters_and_pages_with_a_cursor(harness: WardenHarness) -> None:
    key = await harness.key_for("acme", ["audit:read"])
    await record(harness, await tenant_of(harness, key), 5)
    async with harness.client(key) as client:
        first = (await client.get("/v1/audit", params={"limit": 2})).json()
        second = (await client.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert [e["seq"] for e in first["items"] + second["items"]] == [6, 5, 4, 3]
        assert [
            e["seq"] for e in (await client.get("/v1/audit", params={"subject": "task_1"})).json()["items"]
        ] == [3]
        assert (await client.get("/v1/audit", params={"since": "2999-01-01T00:00:00Z"})).json()["items"] == []
        assert (
            len((await client.get("/v1/audit", params={"until": "2999-01-01T00:00:00"})).json()["items"]) == 6
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
            "entries": 5,
            "first_bad_seq": None,
            "problem": None,
        }
        await edit_reason(harness, tenant_id, 3)
        body = (await client.get("/v1/audit/verify")).json()
        assert body["ok"] is False and body["first_bad_seq"] == 3 and body["entries"] == 2
        assert "entry 3" in body["problem"]
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
    assert "intact" in out and "4 entries" in out  # the key's creation, then 3 decisions

    await edit_reason(harness, tenant_id, 3)
    code, out = await warden_cli(tmp_path, harness.url, key, "verify")
    assert code == 1
    assert "verification failed at entry 3" in out
    assert "Traceback" not in out

    no_scope = await harness.key_for("acme", ["tasks:read"])
    code, out = await warden_cli(tmp_path, harness.url, no_scope, "verify")
    assert code == 1
    assert "audit:read" in out and "Traceback" not in out


async def test_export_streams_every_entry_oldest_first_and_resumes_after_a_seq(
    harness: WardenHarness, tmp_path: Path
) -> None:
    key = await harness.key_for("acme", ["audit:read"])
    tenant_id = await tenant_of(harness, key)
    await record(harness, tenant_id, 6)  # after entry 1, the key's creation
    await record(harness, await tenant_of(harness, await harness.key_for("globex", ["admin"])), 2)
    async with harness.client(key) as client:
        response = await client.get("/v1/audit/export")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5, 6, 7]
        # Each line carries its hashes: the chain can be checked from the export alone.
        assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))
        later = (await client.get("/v1/audit/export", params={"after_seq": 5})).text.splitlines()
        assert [json.loads(line)["seq"] for line in later] == [6, 7]
        assert (await client.get("/v1/audit/export", params={"after_seq": -1})).status_code == 422

    code, out = await warden_cli(tmp_path, harness.url, key, "export", "--output", "audit.jsonl")
    assert code == 0, out
    assert "exported 7 audit entries" in out
    exported = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in exported] == [1, 2, 3, 4, 5, 6, 7]
    assert not (tmp_path / "audit.jsonl.partial").exists()

    no_scope = await harness.key_for("acme", ["tasks:read"])
    code, out = await warden_cli(tmp_path, harness.url, no_scope, "export", "-o", "denied.jsonl")
    assert code == 1 and "audit:read" in out and "Traceback" not in out
    assert not (tmp_path / "denied.jsonl").exists() and not (tmp_path / "denied.jsonl.partial").exists()


async def test_creating_and_revoking_keys_are_audited_admin_actions(harness: WardenHarness) -> None:
    assert harness.runtime is not None
    reader = await harness.key_for("acme", ["audit:read"])
    new = await harness.runtime.keys.create("acme", name="ci bot", scopes=["tasks:read"], actor="cli:alice")
    await harness.runtime.keys.revoke(new.info.id, actor="cli:bob")
    async with harness.client(reader) as client:
        items = (await client.get("/v1/audit", params={"limit": 10})).json()["items"]
        assert (await client.get("/v1/audit/verify")).json()["ok"] is True
    by_action = {e["action"]: e for e in items if e["subject"] == new.info.id}
    assert by_action["key.created"]["actor"] == "cli:alice"
    assert by_action["key.created"]["data"] == {
        "name": "ci bot",
        "prefix": new.info.prefix,
        "scopes": ["tasks:read"],
    }
    assert by_action["key.revoked"]["actor"] == "cli:bob"
    # The secret is never in the log.
    assert new.secret.split("_")[2] not in json.dumps(items)
