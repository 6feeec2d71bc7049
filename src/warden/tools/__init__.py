"""Tools agents call: the interface, built-in tools and the registry."""

from warden.tools.base import FunctionTool, Tool, ToolContext, ToolResult, tool
from warden.tools.registry import ToolRegistry

__all__ = ["FunctionTool", "Tool", "ToolContext", "ToolRegistry", "ToolResult", "tool"]
