"""``python -m warden.protocols.mcp.conformance``: Warden with the MCP conformance fixtures at
``/mcp`` and no key needed there, for the official suite. Listens on loopback only, by design."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys

from warden.config import WardenConfig, load_config
from warden.errors import WardenError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(config: WardenConfig, host: str = "127.0.0.1", port: int = 3001) -> None:
    """Serve until cancelled."""
    if not is_loopback(host):
        raise ValueError(f"the conformance server listens on loopback only, not {host!r}")
    import uvicorn

    from warden.api.app import create_app

    app = create_app(config, workers=1, mcp_conformance=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    await server.serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m warden.protocols.mcp.conformance", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"--host must be a loopback address, not {args.host!r}")
    print(f"MCP conformance fixtures at http://{args.host}:{args.port}/mcp", file=sys.stderr)
    try:
        asyncio.run(serve(load_config(None), args.host, args.port))
    except WardenError as exc:
        print(f"warden: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
