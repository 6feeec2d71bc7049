"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, server mode, every
scenario) against Warden's ``/mcp`` with the conformance fixtures mounted, for both protocol
versions. It passes only when the results match ``mcp-server-expected-failures.yml`` exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn

from tests.conformance.conftest import SUITE
from tests.conftest import MakeConfig
from warden.api.app import create_app
from warden.testing.harness import free_port

EXPECTED_FAILURES = Path(__file__).with_name("mcp-server-expected-failures.yml")


@pytest.fixture
async def mcp_url(make_config: MakeConfig) -> AsyncIterator[str]:
    """Warden with the conformance fixtures, on a free loopback port."""
    port = free_port()
    app = create_app(make_config(), workers=1, mcp_conformance=True)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("the server stopped during start")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(30):
                await serving
        except TimeoutError:
            serving.cancel()


@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
async def test_mcp_server_passes_the_conformance_suite(
    node: Path, mcp_url: str, version: str, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(node),
        str(SUITE),
        "server",
        "--url",
        mcp_url,
        "--suite",
        "all",
        "--spec-version",
        version,
        "--expected-failures",
        str(EXPECTED_FAILURES),
        "--output-dir",
        str(tmp_path / "results"),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(300):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    report = output.decode(errors="replace")
    assert process.returncode == 0, (
        f"conformance {version} does not match {EXPECTED_FAILURES.name}:\n{report}"
    )
    assert "Total:" in report
