"""The tool registry: built-in tools, operator-configured Python tools and MCP servers' tools
(``server.tool`` / ``server.*``), looked up by name."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from warden.config import ToolConfig
from warden.errors import ConfigError
from warden.tools.base import FunctionTool, Tool
from warden.tools.builtin import BUILTIN_TOOLS
from warden.tools.sandbox import SANDBOX_TOOLS

if TYPE_CHECKING:
    from warden.tools.mcp.client import MCPManager


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = (), *, mcp: MCPManager | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self.mcp = mcp
        for t in tools:
            self.add(t)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ConfigError(f"two tools are named {tool.name!r}")
        if self.mcp is not None and self.mcp.handles(tool.name):
            raise ConfigError(
                f"tool {tool.name!r} collides with the tools of MCP server {tool.name.partition('.')[0]!r} "
                "(MCP tools are named server.tool); rename one of them"
            )
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        found = self._tools.get(name)
        if found is None and self.mcp is not None and self.mcp.handles(name) and not name.endswith(".*"):
            return self.mcp.resolve(name)[0]
        return found

    def names(self) -> list[str]:
        return sorted(self._tools)

    def resolve(self, names: Iterable[str]) -> dict[str, Tool]:
        """The tools an agent names; an unknown name is a configuration error."""
        chosen: dict[str, Tool] = {}
        for name in names:
            if self.mcp is not None and self.mcp.handles(name):
                for mcp_tool in self.mcp.resolve(name):
                    chosen[mcp_tool.name] = mcp_tool
                continue
            found = self._tools.get(name)
            if found is None:
                raise ConfigError(f"unknown tool {name!r}; known tools: {', '.join(self.names()) or 'none'}")
            chosen[name] = found
        return chosen

    @classmethod
    def from_config(cls, configs: Iterable[ToolConfig], *, mcp: MCPManager | None = None) -> ToolRegistry:
        registry = cls((*BUILTIN_TOOLS, *SANDBOX_TOOLS), mcp=mcp)
        for cfg in configs:
            registry.add(load_python_tool(cfg))
        return registry


def load_python_tool(cfg: ToolConfig) -> Tool:
    module_name, _, attr = cfg.python.partition(":")
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"tool {cfg.name!r}: cannot import {cfg.python}: {exc}") from exc
    if isinstance(obj, FunctionTool):
        # A copy: the same function may be configured under several names (or be a builtin).
        return dataclasses.replace(obj, name=cfg.name)
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return FunctionTool(func=obj, name=cfg.name, description=(obj.__doc__ or "").strip())
    raise ConfigError(f"tool {cfg.name!r}: {cfg.python} is neither a Tool nor a function")
