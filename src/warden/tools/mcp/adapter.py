"""An MCP server's tool as a Warden `Tool` (``server.tool``), and MCP call results as
`ToolResult` values: text for the model, structured content as data, ``isError`` as an error."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mcp_types as types

from warden.tools.base import ToolContext, ToolResult

if TYPE_CHECKING:
    from warden.tools.mcp.client import MCPManager

PLACEHOLDER_PARAMETERS: dict[str, Any] = {"type": "object"}


def qualified(server: str, tool: str) -> str:
    return f"{server}.{tool}"


def split_qualified(name: str) -> tuple[str, str]:
    """``server.tool`` → (server, tool); server names hold no '.', tool names may."""
    server, dot, tool = name.partition(".")
    if not dot or not server or not tool:
        raise ValueError(f"{name!r} is not a server.tool name")
    return server, tool


@dataclass(eq=False)
class MCPTool:
    """A tool of an MCP server. Its description and parameters are those of the approved
    (pinned) definition; the manager refreshes them when it lists the server's tools."""

    server: str
    remote_name: str
    manager: MCPManager = field(repr=False)
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: dict(PLACEHOLDER_PARAMETERS))
    idempotent: bool = False
    side_effects: bool = True
    """Servers' annotations are untrusted hints, so every MCP tool counts as acting on the world."""
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = qualified(self.server, self.remote_name)

    @property
    def description_source(self) -> str:
        """Who wrote the description: a third party, so the model is told it is untrusted."""
        return f"MCP server {self.server!r}"

    def update(self, definition: dict[str, Any]) -> None:
        self.description = str(definition.get("description") or "")
        schema = definition.get("inputSchema")
        self.parameters = dict(schema) if isinstance(schema, dict) else dict(PLACEHOLDER_PARAMETERS)

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.manager.call(self.server, self.remote_name, arguments, ctx)


def _block_text(block: types.ContentBlock) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, {len(block.data) * 3 // 4} bytes]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.uri}{f' ({block.name})' if block.name else ''}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        return f"[resource {resource.uri}: {resource.mime_type or 'binary'}, {len(resource.blob) * 3 // 4} bytes]"
    return f"[{getattr(block, 'type', 'unknown')} content]"


def to_tool_result(result: types.CallToolResult) -> ToolResult:
    """Text blocks become the model's text; other blocks a short note; structured content
    passes through as ``data`` (and as the text when there is no other content)."""
    parts = [_block_text(block) for block in result.content]
    structured = result.structured_content
    text = "\n".join(p for p in parts if p)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, default=str)
    if not text:
        text = "(the tool returned an error without a message)" if result.is_error else "(no output)"
    return ToolResult(text, is_error=bool(result.is_error), data=structured)
