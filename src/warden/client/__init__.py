"""Python clients of a Warden server: tasks (`WardenClient`) and sandboxes (`Sandbox`,
`AsyncSandbox`)."""

from warden.client.http import ApiError, WardenClient
from warden.client.sandbox import AsyncSandbox, CommandResult, Execution, Sandbox

__all__ = ["ApiError", "AsyncSandbox", "CommandResult", "Execution", "Sandbox", "WardenClient"]
