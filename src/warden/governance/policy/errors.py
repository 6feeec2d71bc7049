"""Errors of the policy engine: a policy that cannot be loaded, with every problem listed."""

from __future__ import annotations

from warden.errors import ConfigError


class PolicyError(ConfigError):
    """Policy rules, a policy file or the Cedar policies are invalid (each problem on its own
    line, ``file:line: path: message``) or cannot be read."""

    code = "policy_error"

    def __init__(self, message: str, *, problems: list[str] | None = None):
        super().__init__(message, details={"problems": problems} if problems else None)
        self.problems = problems or [message]
