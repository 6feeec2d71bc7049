"""Shared by the conformance tests: the official suite and Node 22, installed by `make node-tools`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tools/node/node_modules/@modelcontextprotocol/conformance/dist/index.js"


def _node() -> Path:
    """Node 22 from tools/node (``make node-tools``); the test is skipped without it, except on CI."""
    try:
        found = subprocess.run(
            [str(ROOT / "scripts/ensure-node.sh")], capture_output=True, text=True, check=True, timeout=600
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        found, reason = "", str(exc)
    else:
        reason = "scripts/ensure-node.sh printed no usable path"
    node = Path(found) if found else None
    if node is None or not node.is_file() or not SUITE.is_file():
        message = f"the MCP conformance suite is not installed ({reason}); `make node-tools` installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip("SKIPPING MCP CONFORMANCE — " + message)
    return node


@pytest.fixture(scope="module")
def node() -> Path:
    return _node()
