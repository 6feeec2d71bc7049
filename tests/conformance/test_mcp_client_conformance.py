"""The official MCP conformance suite, client mode, against Warden's MCP client
(`python -m warden.tools.mcp.conformance_client`), for both protocol eras. The run passes only
when the failures are exactly those in mcp-client-expected-failures.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance.conftest import SUITE

EXPECTED = Path(__file__).parent / "mcp-client-expected-failures.yml"


@pytest.mark.parametrize("spec_version", ["2026-07-28", "2025-11-25"])
def test_client_conformance_matches_expected_failures(node: Path, spec_version: str, tmp_path: Path) -> None:
    command = f"{sys.executable} -m warden.tools.mcp.conformance_client"
    run = subprocess.run(
        [
            str(node),
            str(SUITE),
            "client",
            "--command",
            command,
            "--suite",
            "all",
            "--timeout",
            "60000",
            "--spec-version",
            spec_version,
            "--expected-failures",
            str(EXPECTED),
            "--output-dir",
            str(tmp_path / "results"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = run.stdout[run.stdout.find("=== SUITE SUMMARY ===") :]
    assert run.returncode == 0, summary or run.stdout[-4000:] + run.stderr[-2000:]
