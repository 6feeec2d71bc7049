"""The tool registry: built-in tools plus operator-configured Python tools, looked up by name."""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from warden.config import ToolConfig
from warden.errors import ConfigError
from warden.tools.base import FunctionTool, Tool
from warden.tools.builtin import BUILTIN_TOOLS
from warden.tools.sandbox import SANDBOX_TOOLS


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ConfigError(f"two tools are named {tool.name!r}")
        self._tools[tool.name] = tool

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def resolve(self, names: Iterable[str]) -> dict[str, Tool]:
        """The tools an agent names; an unknown name is a configuration error."""
        chosen: dict[str, Tool] = {}
        for name in names:
            found = self._tools.get(name)
            if found is None:
                raise ConfigError(f"unknown tool {name!r}; known tools: {', '.join(self.names()) or 'none'}")
            chosen[name] = found
        return chosen

    @classmethod
    def from_config(cls, configs: Iterable[ToolConfig]) -> ToolRegistry:
        registry = cls((*BUILTIN_TOOLS, *SANDBOX_TOOLS))
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
        obj.name = cfg.name
        return obj
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return FunctionTool(func=obj, name=cfg.name, description=(obj.__doc__ or "").strip())
    raise ConfigError(f"tool {cfg.name!r}: {cfg.python} is neither a Tool nor a function")
