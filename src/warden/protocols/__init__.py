"""Protocol adapters over Warden's services: the MCP server (and, later, A2A)."""
