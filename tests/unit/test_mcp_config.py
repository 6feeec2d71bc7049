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


# -- oauth ---------------------------------------------------------------------------------

URL = "https://mcp.example.com/mcp"


def test_oauth_defaults_to_a_dynamically_registered_authorization_code_client() -> None:
    oauth = MCPServerConfig(name="x", url=URL, oauth={}).oauth
    assert oauth is not None
    assert oauth.grant == "authorization_code"
    assert oauth.client_id is None and oauth.auth_method == "none"


def test_oauth_pre_registered_client_reads_its_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("X_SECRET", "s3cret")
    cfg = MCPServerConfig(
        name="x",
        url=URL,
        oauth={"grant": "client_credentials", "client_id": "warden", "client_secret_env": "X_SECRET"},
    )
    assert cfg.oauth is not None
    assert cfg.oauth.auth_method == "client_secret_basic"
    assert cfg.oauth.client_secret() == "s3cret"
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize(
    "oauth",
    [
        {"grant": "client_credentials"},
        {"grant": "client_credentials", "client_id": "a"},
        {"grant": "password"},
        {"client_secret_env": "X_SECRET"},
        {"client_id": "a", "client_secret_env": "not a name"},
        {"client_id": "a", "token_endpoint_auth_method": "client_secret_post"},
        {"client_id": "a", "client_secret_env": "S", "token_endpoint_auth_method": "none"},
        {"client_metadata_url": "http://example.com/client.json"},
        {"client_metadata_url": "https://example.com/"},
        {
            "grant": "client_credentials",
            "client_id": "a",
            "client_secret_env": "S",
            "client_metadata_url": "https://e.com/c.json",
        },
        {"redirect_uri": "myapp:/callback"},
        {"scopes": ["a b"]},
        {"client_secret": "inline secrets are not accepted"},
    ],
)
def test_invalid_oauth_sections_are_rejected(oauth: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MCPServerConfig(name="x", url=URL, oauth=oauth)


@pytest.mark.parametrize(
    "fields",
    [
        {"command": "y", "oauth": {}},
        {"url": URL, "oauth": {}, "bearer_token_env": "TOKEN"},
        {"url": URL, "oauth": {}, "headers": {"Authorization": "Bearer x"}},
    ],
)
def test_oauth_is_for_http_servers_without_other_credentials(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MCPServerConfig(name="x", **fields)


def test_elicitation_policy_defaults_to_decline() -> None:
    assert MCPServerConfig(name="x", command="y").elicitation == "decline"
    with pytest.raises(ValidationError):
        MCPServerConfig(name="x", command="y", elicitation="accept")


def test_accept_defaults_declines_when_a_required_field_has_no_default() -> None:
    from warden.tools.mcp.elicitation import schema_defaults

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "default": "ada"}, "age": {"type": "integer"}},
    }
    assert schema_defaults(schema) == {"name": "ada"}
    assert schema_defaults({**schema, "required": ["age"]}) is None
