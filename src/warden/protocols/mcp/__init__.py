"""Warden as an MCP server: sandbox tools and every agent as a tool, over Streamable HTTP at
``/mcp`` (both protocol eras, API-key auth, Origin check) and over stdio."""

from warden.protocols.mcp.http import MCP_PATH, McpEndpoint, serve_http
from warden.protocols.mcp.server import WardenMCP, build_server
from warden.protocols.mcp.stdio import serve_stdio

__all__ = ["MCP_PATH", "McpEndpoint", "WardenMCP", "build_server", "serve_http", "serve_stdio"]
