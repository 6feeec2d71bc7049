"""The HTTP API: routes only; rules live in the services."""

from warden.api.app import create_app

__all__ = ["create_app"]
