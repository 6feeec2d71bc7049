"""A strict 2025-era stdio MCP server, as many older servers are: it knows ``initialize``,
``tools/list`` and ``tools/call`` and exits on any other request — the ``server/discover``
probe included. Written on raw JSON-RPC because the SDK's servers answer the probe.

``python strict_legacy.py STATE_DIR``: each start appends the first method it receives to
``STATE_DIR/first-methods``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STATE = Path(sys.argv[1])
STATE.mkdir(parents=True, exist_ok=True)
TOOL = {
    "name": "shout",
    "description": "Upper-case the text.",
    "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


def reply(request_id: object, result: object) -> None:
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


first = True
for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if first:
        with (STATE / "first-methods").open("a") as log:
            log.write(f"{method}\n")
        first = False
    if method == "initialize":
        reply(
            message["id"],
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "strict-legacy", "version": "1"},
            },
        )
    elif method == "notifications/initialized":
        continue
    elif method == "tools/list":
        reply(message["id"], {"tools": [TOOL]})
    elif method == "tools/call":
        text = message["params"]["arguments"]["text"]
        reply(message["id"], {"content": [{"type": "text", "text": text.upper()}], "isError": False})
    else:
        sys.exit(f"strict-legacy: unknown method {method!r}")
