"""Warden's MCP server: one ``MCPServer`` (both protocol eras) over the runtime's services, with
the sandbox tools and one tool per agent; transports (HTTP, stdio) wrap what this builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.mcpserver import MCPServer

from warden import __version__
from warden.protocols.mcp._common import principal_resolver
from warden.protocols.mcp.agent_tools import AgentTools
from warden.protocols.mcp.sandbox_tools import add_sandbox_tools
from warden.service.keys import Principal

if TYPE_CHECKING:
    from warden.runtime import Runtime

INSTRUCTIONS = (
    "Warden runs LLM agents and gVisor sandboxes. Each agent_<name> tool runs that agent on a task "
    "and returns its answer (progress notifications carry its live output); the sandbox_* tools "
    "create a sandbox and run code, commands and file operations in it."
)


@dataclass
class WardenMCP:
    server: MCPServer
    agents: AgentTools
    fixtures: bool

    def stop_accepting(self) -> None:
        """Called as Warden shuts down: calls cut off now leave their tasks running."""
        self.agents.stopping = True


def build_server(
    runtime: Runtime, *, principal: Principal | None = None, fixtures: bool = False
) -> WardenMCP:
    """The MCP server for ``runtime``. ``principal`` is the caller on transports without per-request
    credentials (stdio). ``fixtures`` adds the conformance suite's fixture tools, resources and
    prompts beside the real ones: for conformance runs only, never for a deployment."""
    server: MCPServer = MCPServer(
        name="warden",
        title="Warden",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )
    principal_of = principal_resolver(principal)
    if runtime.sandboxes is not None:
        add_sandbox_tools(server, runtime.sandboxes, principal_of)
    agents = AgentTools(runtime, principal_of)
    agents.install(server)
    if fixtures:
        from warden.protocols.mcp.fixtures import install_fixtures

        install_fixtures(server)
    return WardenMCP(server=server, agents=agents, fixtures=fixtures)
