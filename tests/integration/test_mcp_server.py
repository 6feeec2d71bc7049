"""Warden as an MCP server, driven by the real mcp 2.x ``Client``: ``/mcp`` over Streamable HTTP
in both protocol eras and ``warden mcp serve --stdio``; API-key auth, scopes and the Origin check;
agents as tools (output, progress, cancel) and the sandbox tools on real gVisor."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.conftest import IN_CI, MakeConfig, script, step
from warden.config import WardenConfig
from warden.protocols.mcp._auth import OriginPolicy
from warden.testing import WardenHarness

LEGACY = "legacy"
MODERN = "2026-07-28"
HTTP_MODES = [LEGACY, MODERN]
TRANSPORTS = ["http-legacy", "http-2026-07-28", "stdio-legacy", "stdio-2026-07-28"]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

Connect = Callable[..., AbstractAsyncContextManager[Client]]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http_client(h: WardenHarness, mode: str, key: str | None = None) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key or h.admin_key}"}, timeout=60)
    return Client(streamable_http_client(f"{h.url}/mcp", http_client=http), mode=mode)


def stdio_client(config: WardenConfig, tmp_path: Path, key: str, mode: str = LEGACY) -> Client:
    """``python -m warden.protocols.mcp`` on the harness's database and config."""
    path = tmp_path / "warden.yaml"
    data = config.model_dump(mode="json")
    for model in data["models"].values():
        model["api_key"] = "test"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "WARDEN_CONFIG": str(path), "WARDEN_API_KEY": key}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "warden.protocols.mcp"], env=env, cwd=str(tmp_path)
    )
    return Client(params, mode=mode)


@asynccontextmanager
async def connected(
    transport: str, h: WardenHarness, tmp_path: Path, key: str | None = None
) -> AsyncIterator[Client]:
    kind, _, mode = transport.partition("-")
    if kind == "stdio":
        client = stdio_client(h.config, tmp_path, key or h.admin_key, mode)
    else:
        client = http_client(h, mode, key)
    async with asyncio.timeout(60):
        async with client:
            yield client


def _text(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
async def harness(make_config: MakeConfig) -> AsyncIterator[WardenHarness]:
    config = make_config(
        script=script(
            _name("calc"), step("", ("calculator", {"expression": "2+3"})), step("The answer is 5.")
        )
    )
    async with WardenHarness(config) as h:
        yield h


# -- discovery -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", HTTP_MODES)
async def test_each_agent_is_a_tool_with_an_input_schema(harness: WardenHarness, mode: str) -> None:
    async with http_client(harness, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    tool = tools["agent_tester"]
    assert tool.input_schema["required"] == ["input"]
    assert set(tool.input_schema["properties"]) == {"input", "session_id"}


async def test_sandbox_tools_are_absent_when_sandboxes_are_disabled(harness: WardenHarness) -> None:
    async with http_client(harness, LEGACY) as client:
        names = [t.name for t in (await client.list_tools()).tools]
    assert not [n for n in names if n.startswith("sandbox_")]


async def test_conformance_fixtures_are_not_mounted_by_default(harness: WardenHarness) -> None:
    async with http_client(harness, MODERN) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        resources = (await client.list_resources()).resources
        prompts = (await client.list_prompts()).prompts
    assert sorted(tools) == ["agent_demo", "agent_tester"]
    assert resources == [] and prompts == []


# -- agents as tools -------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_agent_tool_returns_the_task_output(
    harness: WardenHarness, tmp_path: Path, transport: str
) -> None:
    async with connected(transport, harness, tmp_path) as client:
        result = await client.call_tool("agent_tester", {"input": "what is 2+3?"})
    assert not result.is_error, _text(result)
    assert _text(result) == "The answer is 5."
    assert result.structured_content is not None
    task_id = result.structured_content["task_id"]
    async with harness.client() as rest:
        task = (await rest.get(f"/v1/tasks/{task_id}")).json()
    assert task["status"] == "completed"
    assert task["metadata"] == {"via": "mcp"}


@pytest.mark.parametrize("mode", HTTP_MODES)
async def test_agent_tool_streams_task_events_as_progress(harness: WardenHarness, mode: str) -> None:
    messages: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append((progress, message))

    async with http_client(harness, mode) as client:
        result = await client.call_tool("agent_tester", {"input": "2+3"}, progress_callback=on_progress)
    assert not result.is_error
    texts = [m for _, m in messages]
    assert "tool calculator started" in texts
    assert "tool calculator finished" in texts
    assert texts.index("tool calculator started") < texts.index("tool calculator finished")
    progress = [p for p, _ in messages]
    assert progress == sorted(progress) and len(set(progress)) == len(progress)


async def test_agent_tool_continues_a_session(harness: WardenHarness) -> None:
    async with http_client(harness, LEGACY) as client:
        first = await client.call_tool("agent_tester", {"input": "one"})
        assert first.structured_content is not None
        session_id = first.structured_content["session_id"]
        second = await client.call_tool("agent_tester", {"input": "two", "session_id": session_id})
    assert second.structured_content is not None
    assert second.structured_content["session_id"] == session_id


async def test_agent_tool_with_an_unknown_session_is_an_error_result(harness: WardenHarness) -> None:
    async with http_client(harness, LEGACY) as client:
        result = await client.call_tool("agent_tester", {"input": "x", "session_id": "ses_nope"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "session_not_found"


async def test_agent_tool_rejects_empty_input(harness: WardenHarness) -> None:
    async with http_client(harness, LEGACY) as client:
        result = await client.call_tool("agent_tester", {"input": ""})
    assert result.is_error


async def test_failed_task_is_an_error_result(make_config: MakeConfig) -> None:
    config = make_config(
        script=script(_name("slow"), step("", ("wait", {"seconds": 30}))), limits={"timeout": 0.5}
    )
    async with WardenHarness(config) as h, http_client(h, LEGACY) as client:
        result = await client.call_tool("agent_tester", {"input": "wait"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"


@pytest.mark.parametrize("mode", HTTP_MODES)
async def test_cancelling_the_call_cancels_the_task(make_config: MakeConfig, mode: str) -> None:
    config = make_config(
        script=script(_name("wait"), step("Waiting.", ("wait", {"seconds": 60})), step("done"))
    )
    started = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if message == "tool wait started":
            started.set()

    async with WardenHarness(config) as h, http_client(h, mode) as client:
        call = asyncio.create_task(
            client.call_tool("agent_tester", {"input": "wait"}, progress_callback=on_progress)
        )
        try:
            async with asyncio.timeout(20):
                await started.wait()
        finally:
            call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        async with h.client() as rest, asyncio.timeout(10):
            while True:
                tasks = (await rest.get("/v1/tasks")).json()["items"]
                if tasks and tasks[0]["status"] == "cancelled":
                    break
                await asyncio.sleep(0.05)


# -- auth and Origin -------------------------------------------------------------------------


async def test_request_without_a_key_is_401_with_a_json_rpc_error(harness: WardenHarness) -> None:
    async with httpx.AsyncClient(base_url=harness.url) as raw:
        response = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 401
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["data"]["code"] == "missing_api_key"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_request_with_a_revoked_key_is_401(harness: WardenHarness) -> None:
    key = await harness.key_for("acme")
    assert harness.runtime is not None
    await harness.runtime.keys.revoke(key.split("_")[1])
    async with httpx.AsyncClient(base_url=harness.url) as raw:
        response = await raw.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "X-API-Key": key})
    assert response.status_code == 401
    assert response.json()["error"]["data"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"])
async def test_foreign_origin_is_403(harness: WardenHarness, origin: str) -> None:
    async with harness.client() as raw:
        response = await raw.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": origin})
    assert response.status_code == 403
    assert response.json()["error"]["data"]["code"] == "origin_not_allowed"


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:6274", "http://[::1]:8080"])
async def test_loopback_origin_is_allowed(harness: WardenHarness, origin: str) -> None:
    async with harness.client() as raw:
        response = await raw.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": origin})
    assert response.status_code == 200, response.text


async def test_mcp_requests_have_their_own_body_cap(harness: WardenHarness) -> None:
    """A sandbox file of 10 MiB travels as ~13.4 MiB of base64 in one JSON-RPC request: more
    than a REST body may be, within /mcp's own cap; beyond that cap, 413 before reading."""
    padded = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * (14 * 2**20)}}
    async with harness.client(timeout=60) as raw:
        within = await raw.post("/mcp", json=padded, headers=MCP_HEADERS)
        beyond = await raw.post(
            "/mcp", content=b"x" * (33 * 2**20), headers={**MCP_HEADERS, "Content-Type": "application/json"}
        )
    assert within.status_code != 413, within.text[:300]
    assert beyond.status_code == 413


@pytest.mark.parametrize("mode", HTTP_MODES)
async def test_agent_tool_needs_the_tasks_scope(harness: WardenHarness, mode: str) -> None:
    key = await harness.key_for("sandboxers", scopes=["sandboxes:read", "sandboxes:write"])
    async with http_client(harness, mode, key) as client:
        result = await client.call_tool("agent_tester", {"input": "x"})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "missing_scope"


async def test_a_session_cannot_be_used_with_another_key(harness: WardenHarness) -> None:
    other = await harness.key_for("other")
    async with harness.client() as raw:
        opened = await raw.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        headers = {**MCP_HEADERS, "Mcp-Session-Id": session, "Authorization": f"Bearer {other}"}
        response = await raw.post("/mcp", json=listing, headers=headers)
    assert response.status_code == 404


async def test_tasks_are_created_in_the_key_tenant(harness: WardenHarness) -> None:
    key = await harness.key_for("acme")
    async with http_client(harness, MODERN, key) as client:
        result = await client.call_tool("agent_tester", {"input": "2+3"})
    assert result.structured_content is not None
    task_id = result.structured_content["task_id"]
    async with harness.client(key) as acme, harness.client() as admin_default:
        assert (await acme.get(f"/v1/tasks/{task_id}")).status_code == 200
        assert (await admin_default.get("/v1/tasks")).json()["items"] == []


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://console.example.com", True),
        ("https://console.example.com:443", False),
        ("https://CONSOLE.example.com/", True),
        ("http://console.example.com", False),
        ("https://other.example.com", False),
        ("http://localhost", True),
        ("http://app.localhost:5173", True),
        ("file://", False),
        ("http://user@localhost", False),
    ],
)
def test_origin_policy_takes_loopback_and_the_allow_list(origin: str, allowed: bool) -> None:
    policy = OriginPolicy(["https://console.example.com"])
    assert policy.allows(origin) is allowed


# -- stdio -----------------------------------------------------------------------------------


async def _stdio_exit(h: WardenHarness, tmp_path: Path, key: str | None) -> tuple[int | None, bytes, bytes]:
    path = tmp_path / "warden.yaml"
    path.write_text(yaml.safe_dump({"database_url": h.config.database_url, "home": str(tmp_path / "h")}))
    env = {k: v for k, v in os.environ.items() if k != "WARDEN_API_KEY"}
    env["WARDEN_CONFIG"] = str(path)
    if key is not None:
        env["WARDEN_API_KEY"] = key
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "warden.protocols.mcp",
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    return process.returncode, stdout, stderr


async def test_stdio_without_a_key_exits_with_a_message(harness: WardenHarness, tmp_path: Path) -> None:
    code, stdout, stderr = await _stdio_exit(harness, tmp_path, None)
    assert (code, stdout) == (1, b"")
    assert b"WARDEN_API_KEY" in stderr


async def test_stdio_with_an_unknown_key_exits_with_a_message(harness: WardenHarness, tmp_path: Path) -> None:
    code, stdout, stderr = await _stdio_exit(harness, tmp_path, "wk_abc_def")
    assert (code, stdout) == (1, b"")
    assert b"unknown or revoked API key" in stderr


# -- sandboxes on real gVisor ----------------------------------------------------------------

SANDBOX = {"backend": "gvisor", "templates": [{"name": "python", "pool_size": 0, "hibernate_after": None}]}
needs_gvisor = pytest.mark.skipif(
    not shutil.which("runsc") and not IN_CI, reason="runsc (gVisor) is not installed; `make test` installs it"
)


@pytest.fixture
async def sandbox_harness(make_config: MakeConfig) -> AsyncIterator[WardenHarness]:
    config = make_config(script=script(_name("sbx"), step("ok")), sandbox=SANDBOX)
    async with WardenHarness(config) as h:
        yield h
        # Whatever a failed test left running.
        from sqlalchemy import select

        from warden.sandbox.manager import SandboxRecord
        from warden.store.schema import sandboxes

        assert h.runtime is not None and h.runtime.sandboxes is not None
        async with h.runtime.db.read() as conn:
            rows = await conn.execute(select(sandboxes).where(sandboxes.c.state != "destroyed"))
            records = [SandboxRecord.from_row(r) for r in rows]
        for record in records:
            await h.runtime.sandboxes._destroy(record)


async def _call(client: Client, name: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(name, arguments)
    assert not result.is_error, _text(result)
    assert result.structured_content is not None
    return dict(result.structured_content)


@needs_gvisor
@pytest.mark.parametrize("mode", HTTP_MODES)
async def test_sandbox_code_keeps_state_between_calls(sandbox_harness: WardenHarness, mode: str) -> None:
    async with http_client(sandbox_harness, mode) as client:
        sandbox = await _call(client, "sandbox_create")
        await _call(client, "sandbox_run_code", sandbox_id=sandbox["id"], code="x = 20")
        result = await _call(client, "sandbox_run_code", sandbox_id=sandbox["id"], code="print(x * 2)")
        await _call(client, "sandbox_destroy", sandbox_id=sandbox["id"])
    assert result["stdout"] == "40\n"


@needs_gvisor
async def test_sandbox_files_written_are_seen_by_commands(sandbox_harness: WardenHarness) -> None:
    async with http_client(sandbox_harness, LEGACY) as client:
        sandbox = await _call(client, "sandbox_create")
        sid = sandbox["id"]
        await _call(client, "sandbox_write_file", sandbox_id=sid, path="/workspace/a.txt", content="héllo")
        command = await _call(
            client, "sandbox_run_command", sandbox_id=sid, command="wc -c < /workspace/a.txt"
        )
        read = await _call(client, "sandbox_read_file", sandbox_id=sid, path="/workspace/a.txt")
        await _call(client, "sandbox_destroy", sandbox_id=sid)
    assert command["stdout"].strip() == "6"
    assert read == {"path": "/workspace/a.txt", "encoding": "utf-8", "content": "héllo"}


@needs_gvisor
async def test_sandbox_snapshot_restores_into_a_new_sandbox(sandbox_harness: WardenHarness) -> None:
    async with http_client(sandbox_harness, LEGACY) as client:
        sid = (await _call(client, "sandbox_create"))["id"]
        await _call(client, "sandbox_write_file", sandbox_id=sid, path="/workspace/s.txt", content="kept")
        snapshot = await _call(client, "sandbox_snapshot", sandbox_id=sid)
        restored = await _call(client, "sandbox_create", snapshot_id=snapshot["id"])
        read = await _call(client, "sandbox_read_file", sandbox_id=restored["id"], path="/workspace/s.txt")
        for each in (sid, restored["id"]):
            await _call(client, "sandbox_destroy", sandbox_id=each)
    assert read["content"] == "kept"


@needs_gvisor
async def test_sandbox_of_another_tenant_is_not_found(sandbox_harness: WardenHarness) -> None:
    other = await sandbox_harness.key_for("other")
    async with (
        http_client(sandbox_harness, LEGACY) as mine,
        http_client(sandbox_harness, LEGACY, other) as theirs,
    ):
        sid = (await _call(mine, "sandbox_create"))["id"]
        result = await theirs.call_tool("sandbox_run_code", {"sandbox_id": sid, "code": "1"})
        await _call(mine, "sandbox_destroy", sandbox_id=sid)
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "sandbox_not_found"


@needs_gvisor
async def test_sandbox_tools_need_the_sandbox_scope(sandbox_harness: WardenHarness) -> None:
    key = await sandbox_harness.key_for("readers", scopes=["tasks:read", "tasks:write", "sandboxes:read"])
    async with http_client(sandbox_harness, LEGACY, key) as client:
        result = await client.call_tool("sandbox_create", {})
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["code"] == "missing_scope"
