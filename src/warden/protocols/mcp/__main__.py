"""``python -m warden.protocols.mcp``: the stdio server, as ``warden mcp serve --stdio`` runs it
(the key from ``$WARDEN_API_KEY``, the configuration from ``$WARDEN_CONFIG`` or ./warden.yaml)."""

from warden.protocols.mcp.stdio import main

main()
