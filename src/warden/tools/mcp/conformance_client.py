"""The client the official MCP conformance suite drives (``conformance client --command
"python -m warden.tools.mcp.conformance_client"``): Warden's real `Connection` against the
suite's scenario server, whose URL is the last argument; the scenario is in the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from warden.config import MCPServerConfig
from warden.errors import WardenError
from warden.tools.mcp.connection import Connection
from warden.tools.mcp.era import EraCache

log = logging.getLogger("warden.mcp.conformance")

SCENARIO_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "tools_call": ("add_numbers", {"a": 5, "b": 3}),
    "sse-retry": ("test_reconnection", {}),
}


def _example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments from a tool's schema defaults and examples, for scenarios that call every tool."""
    arguments: dict[str, Any] = {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return arguments
    for name, spec in properties.items():
        if not isinstance(spec, dict):
            continue
        if "default" in spec:
            arguments[name] = spec["default"]
        elif isinstance(spec.get("examples"), list) and spec["examples"]:
            arguments[name] = spec["examples"][0]
        elif name in (schema.get("required") or []):
            arguments[name] = {"string": "x", "integer": 1, "number": 1, "boolean": True}.get(
                str(spec.get("type")), "x"
            )
    return arguments


async def run(url: str, scenario: str, protocol_version: str | None) -> None:
    era = "modern" if protocol_version in MODERN_PROTOCOL_VERSIONS else "legacy"
    config = MCPServerConfig(name="conformance", url=url, era=era, max_reconnects=0, connect_timeout=10)
    connection = Connection(config, eras=EraCache())
    try:
        tools = await connection.list_tools()
        if scenario == "initialize":
            return
        if scenario in SCENARIO_CALLS:
            name, arguments = SCENARIO_CALLS[scenario]
            result = await connection.call_tool(name, arguments)
            log.info("%s → %s", name, result.model_dump(mode="json", exclude_none=True))
            return
        for tool in tools:
            result = await connection.call_tool(tool.name, _example_arguments(tool.input_schema))
            log.info("%s → error=%s", tool.name, result.is_error)
    finally:
        await connection.aclose()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if len(sys.argv) < 2:
        print("usage: python -m warden.tools.mcp.conformance_client <server-url>", file=sys.stderr)
        return 2
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "initialize")
    try:
        asyncio.run(run(sys.argv[-1], scenario, os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION")))
    except WardenError as exc:
        print(f"conformance client: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
