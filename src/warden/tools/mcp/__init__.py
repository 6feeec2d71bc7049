"""MCP client: Warden's agents call tools of MCP servers (stdio or Streamable HTTP) named
``server.tool``, pinned by hash and screened for poisoning before they run."""

from warden.tools.mcp.adapter import MCPTool, to_tool_result
from warden.tools.mcp.client import MCPManager, disabled_reason
from warden.tools.mcp.connection import Connection, MCPTimeout, MCPUnavailable
from warden.tools.mcp.era import Era, EraCache, EraVerdict
from warden.tools.mcp.pins import (
    MemoryPins,
    Pins,
    PinStore,
    Sighting,
    ToolRecord,
    ToolStatus,
    canonical_definition,
    canonical_json,
    definition_sha256,
)
from warden.tools.mcp.poisoning import Flag, Rule, scan

__all__ = [
    "Connection",
    "Era",
    "EraCache",
    "EraVerdict",
    "Flag",
    "MCPManager",
    "MCPTimeout",
    "MCPTool",
    "MCPUnavailable",
    "MemoryPins",
    "PinStore",
    "Pins",
    "Rule",
    "Sighting",
    "ToolRecord",
    "ToolStatus",
    "canonical_definition",
    "canonical_json",
    "definition_sha256",
    "disabled_reason",
    "scan",
    "to_tool_result",
]
