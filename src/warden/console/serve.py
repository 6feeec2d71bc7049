"""Serving the console: ``/`` is its page, ``/console/…`` its scripts and styles, every response
with a strict Content-Security-Policy so injected markup could never run script."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_PATH = "/console"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Sandbox images are shown from blob: URLs made of bytes fetched with the key.
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""No inline script or style, nothing from another origin, and no framing (clickjacking)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (cheap with ETags), so an upgraded server never runs stale scripts.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """Static files with the console's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


async def _index(_request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


def mount(app: FastAPI) -> None:
    """Serve the console on ``app``: the page at ``/`` and its assets under ``/console``."""
    app.add_api_route("/", _index, methods=["GET", "HEAD"], include_in_schema=False)
    app.router.routes.append(Mount(ASSETS_PATH, app=ConsoleFiles(directory=STATIC_DIR), name="console"))
