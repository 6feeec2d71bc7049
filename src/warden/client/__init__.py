"""Python clients of a Warden server."""

from warden.client.http import ApiError, WardenClient

__all__ = ["ApiError", "WardenClient"]
