"""The one error hierarchy: every expected failure carries a machine code, a human message
and the HTTP status the API maps it to."""

from __future__ import annotations

from typing import Any


class WardenError(Exception):
    """Base of every error Warden raises on purpose."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(WardenError):
    code = "invalid_input"
    http_status = 422


class Unauthorized(WardenError):
    code = "unauthorized"
    http_status = 401


class Forbidden(WardenError):
    code = "forbidden"
    http_status = 403


class NotFound(WardenError):
    code = "not_found"
    http_status = 404


class Conflict(WardenError):
    code = "conflict"
    http_status = 409


class ConfigError(WardenError):
    """warden.yaml, an agent spec or an environment setting is wrong."""

    code = "config_error"
    http_status = 500


class ModelError(WardenError):
    """A model provider failed after its retries (network, 4xx/5xx, malformed stream)."""

    code = "model_error"
    http_status = 502

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class LimitExceeded(WardenError):
    """A task crossed one of its agent's limits (steps, tokens, wall time)."""

    code = "limit_exceeded"
    http_status = 409


class BudgetExceeded(LimitExceeded):
    """A tenant's budget over a time window is spent: new tasks are refused, running ones stop."""

    code = "budget_exceeded"
    http_status = 429


class StorageError(WardenError):
    code = "storage_error"
    http_status = 503
