"""The client the official MCP conformance suite drives (``conformance client --command
"python -m warden.tools.mcp.conformance_client"``): Warden's real `MCPManager` and `Connection`,
configured through `MCPServerConfig`, against the suite's scenario server, whose URL is the last
argument. The suite passes the scenario in ``MCP_CONFORMANCE_SCENARIO`` and its data (tool calls
to make, pre-registered OAuth credentials) as JSON in ``MCP_CONFORMANCE_CONTEXT``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from warden.config import MCPOAuthConfig, MCPServerConfig
from warden.errors import WardenError
from warden.tools.mcp.client import MCPManager
from warden.tools.mcp.connection import Connection, describe

log = logging.getLogger("warden.mcp.conformance")

SERVER = "conformance"
SECRET_ENV = "WARDEN_CONFORMANCE_OAUTH_CLIENT_SECRET"
"""The scenario's client secret is handed to Warden's config the way an operator would: by the
name of an environment variable."""
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
"""This client's (notional) metadata document, used where the authorization server supports
client ID metadata documents instead of dynamic registration."""

SCENARIO_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "tools_call": ("add_numbers", {"a": 5, "b": 3}),
    "sse-retry": ("test_reconnection", {}),
}
SCHEMA_ECHO_TOOL = "json_schema_echo"


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


def _oauth(scenario: str, context: dict[str, Any]) -> MCPOAuthConfig | None:
    """The ``oauth`` section an operator would write for the scenario's server."""
    if not scenario.startswith("auth/"):
        return None
    client_id = context.get("client_id")
    secret = context.get("client_secret")
    if secret:
        os.environ[SECRET_ENV] = str(secret)
    if scenario == "auth/client-credentials-basic":
        return MCPOAuthConfig(grant="client_credentials", client_id=client_id, client_secret_env=SECRET_ENV)
    if client_id:  # pre-registered with the authorization server
        return MCPOAuthConfig(
            client_id=str(client_id),
            client_secret_env=SECRET_ENV if secret else None,
            issuer=context.get("issuer"),
        )
    return MCPOAuthConfig(client_name="warden-conformance", client_metadata_url=CLIENT_METADATA_URL)


def server_config(
    url: str, scenario: str, protocol_version: str | None, context: dict[str, Any]
) -> MCPServerConfig:
    return MCPServerConfig(
        name=SERVER,
        url=url,
        era="modern" if protocol_version in MODERN_PROTOCOL_VERSIONS else "legacy",
        approval="auto",
        max_reconnects=0,
        connect_timeout=20,
        elicitation="accept_defaults",
        oauth=_oauth(scenario, context),
    )


async def _call(connection: Connection, name: str, arguments: dict[str, Any], *, strict: bool) -> None:
    try:
        result = await connection.call_tool(name, arguments)
    except (MCPError, WardenError, ValidationError) as exc:
        # As in `MCPManager.call`, a failed or malformed result is the model's tool error.
        if strict:
            raise
        log.info("%s → %s", name, describe(exc))
        return
    log.info("%s → error=%s", name, result.is_error)


async def _echo_schema(manager: MCPManager, connection: Connection) -> None:
    """Send back, verbatim, the input schema Warden shows the model for the scenario's tool."""
    tools = [t for t in manager.resolve(f"{SERVER}.*") if t.remote_name != SCHEMA_ECHO_TOOL]
    if not tools:
        raise WardenError("the scenario's tool was not approved")
    await _call(connection, SCHEMA_ECHO_TOOL, {"schema": tools[0].parameters}, strict=True)


async def run(url: str, scenario: str, protocol_version: str | None, context: dict[str, Any]) -> None:
    manager = MCPManager([server_config(url, scenario, protocol_version, context)])
    try:
        connection = await manager.connection(SERVER)
        await manager.discover(SERVER, connection)
        if scenario == "initialize":
            return
        if scenario in SCENARIO_CALLS:
            name, arguments = SCENARIO_CALLS[scenario]
            await _call(connection, name, arguments, strict=True)
            return
        if isinstance(context.get("toolCalls"), list):  # the scenario names its calls
            for call in context["toolCalls"]:
                await _call(connection, call["name"], dict(call.get("arguments") or {}), strict=True)
            return
        if scenario == "json-schema-2020-12-preservation":
            await _echo_schema(manager, connection)
            return
        for tool in await connection.list_tools():
            await _call(connection, tool.name, _example_arguments(tool.input_schema), strict=False)
    finally:
        await manager.aclose()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if len(sys.argv) < 2:
        print("usage: python -m warden.tools.mcp.conformance_client <server-url>", file=sys.stderr)
        return 2
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "initialize")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    try:
        asyncio.run(run(sys.argv[-1], scenario, os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION"), context))
    except WardenError as exc:
        print(f"conformance client: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
