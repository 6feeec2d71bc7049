"""MCP server configuration: transports validated, names unique and dot-free, and MCP tool names
kept apart from Warden's own tools."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from warden.config import MCPServerConfig, ToolConfig, WardenConfig
from warden.errors import ConfigError
from warden.tools.mcp import MCPManager
from warden.tools.registry import ToolRegistry


def test_stdio_server_is_inferred_from_its_command() -> None:
    assert MCPServerConfig(name="time", command="mcp-server-time").transport == "stdio"


def test_http_server_is_inferred_from_its_url() -> None:
    assert MCPServerConfig(name="ev", url="https://mcp.example.com/mcp").transport == "http"


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "a.b", "command": "x"},
        {"name": "Upper", "command": "x"},
        {"name": "x"},
        {"name": "x", "transport": "stdio"},
        {"name": "x", "url": "ftp://host/mcp"},
        {"name": "x", "url": "file:///etc/passwd"},
        {"name": "x", "command": "y", "url": "http://h/mcp"},
        {"name": "x", "command": "y", "headers": {"a": "b"}},
        {"name": "x", "command": "y", "typo": 1},
        {"name": "x", "url": "http://h/mcp", "bearer_token_env": "not a name"},
        {"name": "x", "command": "y", "call_timeout": 10, "max_call_timeout": 5},
    ],
)
def test_invalid_server_configs_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MCPServerConfig(**fields)


def test_server_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="two MCP servers"):
        WardenConfig(mcp_servers=[{"name": "a", "command": "x"}, {"name": "a", "command": "y"}])


def now() -> str:
    """A Python tool for the collision test."""
    return "now"


def test_python_tool_in_a_server_namespace_is_a_collision() -> None:
    manager = MCPManager([MCPServerConfig(name="time", command="x")])
    with pytest.raises(ConfigError, match="collides"):
        ToolRegistry.from_config(
            [ToolConfig(name="time.now", python="tests.unit.test_mcp_config:now")], mcp=manager
        )


def test_agent_tools_resolve_mcp_names_without_contacting_servers() -> None:
    manager = MCPManager([MCPServerConfig(name="time", command="/nonexistent")])
    tools = ToolRegistry.from_config([], mcp=manager).resolve(
        ["calculator", "time.get_current_time", "time.*"]
    )
    assert sorted(tools) == ["calculator", "time.get_current_time"]
    assert tools["time.get_current_time"].description.startswith("(unavailable")


def test_unknown_mcp_server_in_a_tool_name_is_unknown_tool() -> None:
    manager = MCPManager([MCPServerConfig(name="time", command="x")])
    with pytest.raises(ConfigError, match="unknown tool"):
        ToolRegistry.from_config([], mcp=manager).resolve(["nope.tool"])
